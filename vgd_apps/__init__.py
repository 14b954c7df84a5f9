"""Talking to a trained VGD-GPT2: the terminal chat (`python -m vgd_apps.chat`), the web page
(`python -m vgd_apps.web`) and the relevance plots they show."""
