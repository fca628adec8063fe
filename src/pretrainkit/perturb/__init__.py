"""Training on perturbed inputs: adversarial training (FGM, PGD) and the cross-lingual
Embedding-Push / Attention-Pull / Robust-targets terms, as a wrapper the one loop trains
(``module.Perturbed``; options in the torch-free ``options.PerturbOptions``)."""
