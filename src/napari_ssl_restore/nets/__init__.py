"""Plain ``torch.nn.Module`` architectures (no training loops, no I/O)."""
