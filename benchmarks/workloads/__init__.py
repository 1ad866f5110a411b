"""One module per workload family; each exposes ``async def run(settings) -> list[Result]``."""
