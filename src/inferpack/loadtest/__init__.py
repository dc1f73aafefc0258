"""loadtest: drive any KServe v2 server (REST or gRPC) and measure it from the outside.

Closed loop (N requests always in flight) or open loop (Poisson arrivals at a rate, with
send lateness measured so coordinated omission shows); model choice sequential, uniform
or Zipf over many models; windows until stable (perf_analyzer's rule), pooled
percentiles over raw samples. Torch-free: it runs on a laptop.
"""
