#!/usr/bin/env bash
# The peer's environment for benchmarks/peer.py: ultralytics YOLOv5 (PyPI `yolov5`) on PyTorch,
# in its own venv. Never install torch/yolov5 into the project's python.
#
# yolov5 7.0.x declares heavy dependencies (tensorboard, boto3, sahi, roboflow, huggingface-hub
# <0.25, ...) whose resolution backtracks through torch releases; none is needed to build, train
# and export the model, so yolov5, ultralytics (its general.py imports
# ultralytics.utils.checks) and thop go in with --no-deps and the few runtime needs by hand.
# setuptools < 70: yolov5 imports pkg_resources.
set -euo pipefail
VENV=${1:-/work/bench-venv}
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install torch==2.14.1 torchvision==0.29.1
"$PIP" install --no-deps yolov5==7.0.14 ultralytics==8.4.190 thop==0.1.1.post2209072238
"$PIP" install "setuptools<70" pyyaml tqdm pandas matplotlib opencv-python-headless onnx onnxruntime \
    requests psutil scipy gitpython seaborn
"$VENV/bin/python" -c "import torch, yolov5; from yolov5.models.yolo import Model; print('peer venv ok: torch', torch.__version__, 'yolov5', yolov5.__version__)"
