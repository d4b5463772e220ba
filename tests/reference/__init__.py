"""Builders for tiny random-weight models from the official qwen-tts classes (the ground truth)."""
