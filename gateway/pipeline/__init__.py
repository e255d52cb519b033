"""The per-request pipeline: assemble context before the provider call, record the turn after."""
