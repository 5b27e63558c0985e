"""The sequence blocks drawn: Bahdanau's additive attention and MTGNN's temporal gate, in tiny models trained on
procedural tasks whose right answers are known.

    tasks       digit strings to reverse (the right alignment is the anti-diagonal) and multi-sine series with known
                periods, plus reading a digit line or a CSV of series given by the user
    models      a seq2seq digit reverser around `additive` and a forecaster around stacked `temporal_gate` blocks
    files       the shipped weights (safetensors + JSON sidecar) and reading them back without running code
    analysis    one input through a model, captured
    evaluate    alignment accuracy and the gate's periods against the known answers
    views       the alignment heatmap and the gate over nodes x time, as Views
    api         `attnviz.sequence(block, input)`, the front door
    train       training both models (imported by weights/build.py only, never by the inference side)
"""

SEQUENCE_BLOCKS = ("additive", "temporal_gate")
"""The blocks `attnviz sequence` draws."""
