"Document processing of the leaderboard's real tasks (written by moe_nb.leaderboard.tasks)."
from moe_nb.leaderboard.tasks import popqa_docs, faithdial_docs, rouge_l  # noqa: F401
