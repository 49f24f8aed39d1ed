"""Label values shared by the data, the losses, the metrics and the pictures.

Masks hold class ids (0 background) or, in an episode, 0 background and 1 foreground;
`IGNORE_LABEL` marks pixels that no loss or metric counts: object borders, padding and,
in stage 1, novel classes.
"""

IGNORE_LABEL = 255
