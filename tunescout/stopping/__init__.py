"""Early stopping, apart from what runs it: the rules (:mod:`.rules`, over :mod:`.signals`), the
two scheduling policies (:mod:`.policies`) and successive halving over checkpoints
(:mod:`.promotion`). Pure functions and objects over a cohort's records: the sweep driver applies
them to live trials, and the analyses replay them on finished ones, with the same code."""
