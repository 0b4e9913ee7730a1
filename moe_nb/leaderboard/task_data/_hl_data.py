"Data loader of the offline leaderboard tasks (written by moe_nb.leaderboard.tasks)."
from pathlib import Path
from moe_nb.leaderboard.tasks import load_task_docs

def load(data, **kw): return load_task_docs(Path(__file__).parent/data)
