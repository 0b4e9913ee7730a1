"Test order for CI's two workers: the longest set-up (the Select-MoE experiment, about 400 s) starts first, so it does not run alone at the end."
FIRST = ("experiment",)  # module fixtures that take minutes


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda it: not any(f in getattr(it, "fixturenames", ()) for f in FIRST))  # stable: the rest keep their order
