"""What a user runs end to end, composed from the layers below: ``tune`` (rank, study, keep the
winner, report), ``analyze``, ``recommend`` and ``demo`` (the embedded study from base model to
report). It sits above ``study/`` (running trials), ``analysis/`` (reading their results)
and ``report/`` (showing them), which import nothing from here, so no package imports one above it.
"""
