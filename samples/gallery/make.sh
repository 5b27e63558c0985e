#!/bin/sh
# Regenerate the README's pictures with the shipped demo weights (run from the repository root; ~2 minutes on CPU).
set -e
G=samples/gallery
attnviz show cbam samples/scenes/scene_heart.png --cam gradcam --out $G
attnviz show triplet samples/scenes/scene_crescent.png --out $G
attnviz channels se samples/scenes/scene_circle.png --layer 4 --out $G
attnviz channels sk samples/scenes/scene_arrow.png --layer 3 --out $G
attnviz show cot samples/scenes/scene_heart.png --out $G
attnviz coords coord samples/scenes/scene_ring.png --out $G
attnviz matrix mhsa samples/scenes/scene_circle.png --query 51,99 --heads 0,1 --out $G
attnviz asff-weights weights/det.pt samples/scenes/detection_scene.png --out $G
attnviz sequence additive --out $G
attnviz sequence temporal_gate --out $G
python -c "import attnviz; attnviz.show('scse', 'samples/scenes/scene_ring.png', stages=[1, 2]).save('$G')"
