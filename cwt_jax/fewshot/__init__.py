"""The few-shot method: the support classifier, its inner loop, one episode end to end.

`classifier` fits and applies the linear classifier, `inner` holds the inner loop's
settings (`InnerLoop`) and its learned parts, `episode` composes backbone features ->
fitted classifier -> CWT adaptation -> logits for one episode, and `losses` scores them.
"""
