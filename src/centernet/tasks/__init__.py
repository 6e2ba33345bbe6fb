"""Task modules: one per task (2D boxes, multi-person pose, monocular 3D), each with its heads, targets, loss and decoder."""
