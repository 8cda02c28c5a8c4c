"""Where a stack runs: compose files, stack state, rolling replacement, hosts."""
