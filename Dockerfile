# Tune-A-Video web app on a CUDA GPU (it falls back to CPU + the embedded toy-world model without one).
#   docker build -t tuneavideo .
#   docker run --gpus all -p 7860:7860 -v hf-cache:/root/.cache/huggingface tuneavideo
# Any CUDA 12 image with Python >= 3.10 works as the base; pass --build-arg BASE=... to change it.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DEBIAN_FRONTEND=noninteractive \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860

# libGL / glib: opencv-contrib-python (pulled in by mediapipe, for pose hints) links against them. gcc: Triton
# builds a small C launcher for each fast-path kernel on first use (without a compiler the PyTorch path runs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so code edits do not re-install them. If requirements.txt pins a torch version
# other than the base image's, pip installs that (CUDA) build from PyPI.
COPY requirements.txt ./
RUN pip install --upgrade pip && grep -v '^-e ' requirements.txt > /tmp/deps.txt && pip install -r /tmp/deps.txt

COPY . .
RUN pip install --no-deps -e .

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)" || exit 1
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
