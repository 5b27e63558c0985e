"""The pictures of each drawing command, one module a command: `draw(analysis, loaded, style, ...) -> View`.

`base` holds View and Style (torch-free); `common` what several commands share (which blocks are drawn, captions,
tiles).
"""
