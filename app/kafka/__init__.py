"""Topics, topic creation, the group's offsets, and the consumer classes that own the delivery
rules."""
