"""The query table: every width x resolution, its accuracy and cost, and budget selection."""

from ..data.splits import choose_split
from .build import (
    SearchPlan,
    build_query_table,
    clear_search_state,
    measure_config,
    model_fingerprint,
    report_test_accuracy,
)
from .plot import plot_detection_table, plot_learning_curves, plot_tables
from .run import (
    SearchResult,
    describe_evaluation,
    evaluate_checkpoint,
    search_checkpoint,
)
from .table import ROW_KEYS, QueryTable, pareto_frontier

__all__ = ["QueryTable", "ROW_KEYS", "pareto_frontier", "build_query_table",
           "model_fingerprint", "clear_search_state", "plot_tables", "plot_detection_table",
           "plot_learning_curves", "search_checkpoint", "SearchResult", "evaluate_checkpoint",
           "choose_split", "report_test_accuracy", "describe_evaluation", "SearchPlan", "measure_config"]
