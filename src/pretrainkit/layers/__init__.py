"""Building blocks shared by the slots: norms, positions, attention, feed-forward, blocks."""
