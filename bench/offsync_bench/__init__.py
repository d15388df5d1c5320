"""The Offsync benchmark harness (`make bench`): workloads of ../shared/bench/workloads.md."""
