"""VGD-GPT2: video-grounded dialogue with GPT-2 on the Hugging Face stack."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="vgd-gpt2",
    version="0.1.0",
    description="VGD-GPT2 (ACL 2020): GPT-2 fine-tuned on video features + dialogue, with transformers, datasets and accelerate",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # the model's remote-code files (what save_pretrained copies), the training entry point, and the deprecated
    # aliases of modules that moved into the packages (removed in 0.3)
    py_modules=[
        "configuration_vgd_gpt2", "modeling_vgd_gpt2", "processing_vgd", "feature_extraction_vgd", "video_processing_vgd",
        "video_backbone_vgd", "chat_template_vgd", "pipeline_vgd", "run_vgd",
        "trainer_vgd", "data_collator_vgd", "checkpointing_vgd", "chat_vgd", "app_vgd", "visualization_vgd",
    ],
    packages=find_packages(include=["avsd_dataset", "avsd_dataset.*", "vgd_training", "vgd_training.*", "vgd_apps", "vgd_apps.*"]),
    package_data={"avsd_dataset": ["*.txt"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<6",
        "datasets>=5.2",
        "accelerate>=1.15",
        "evaluate>=0.4.6",
        "safetensors>=0.8",
        "huggingface_hub>=2.4",
        "tokenizers>=0.23",
        "numpy>=1.26",
        "pycocoevalcap>=1.2",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require={
        # Video files (extraction, models that record a video backbone): the torchvision video backbones and PyAV
        # (FFmpeg bundled in its wheels). Install the torchvision release built for your torch (torch 2.14.1 +
        # torchvision 0.29.1). A features-only model needs neither.
        "video": ["torchvision>=0.19", "av>=12"],
        "test": ["pytest>=8", "selenium>=4.20", "gradio>=6", "matplotlib>=3.8", "torchvision>=0.19", "av>=12"],
        "chat": ["gradio>=6", "matplotlib>=3.8"],
        "tensorboard": ["tensorboard>=2.16"],
        "deepspeed": ["deepspeed>=0.16"],
    },
    entry_points={"console_scripts": ["vgd-score=avsd_dataset.score:main", "vgd-chat=vgd_apps.chat:main", "vgd-web=vgd_apps.web:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
