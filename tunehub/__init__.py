"""tunehub: registry, Hub sync, int8 quantization and generation for video-diffusion finetunes."""

__version__ = "0.1.0"
