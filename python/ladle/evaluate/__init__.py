"""Before/after evaluation: fine-tuned models against prompted models, local or served.

``evaluate(recipe, eval_rows, train_rows, candidates)`` generates answers for each
baseline (a model or an OpenAI-compatible endpoint, with its own system prompt and
few-shot examples from the train rows) and each candidate, scores them, puts a
paired-bootstrap interval and a test on every difference and checks the recipe's gate;
it returns an :class:`EvalReport` that ``write_reports`` writes. Modules, upstream
first: ``metrics`` (scoring), ``stats`` (bootstrap, McNemar), ``prompts`` (rows,
few-shot), ``generate`` (local models), ``result`` (the report as values), ``gate``,
``runner``, then ``chart`` and ``report`` (files).
"""

from ladle.evaluate.gate import GateResult
from ladle.evaluate.report import check_output_dir, compare_reports, load_report, write_reports
from ladle.evaluate.result import EXIT_CODES, Contestant, EvalReport
from ladle.evaluate.runner import evaluate

__all__ = [
    "EXIT_CODES",
    "Contestant",
    "EvalReport",
    "GateResult",
    "check_output_dir",
    "compare_reports",
    "evaluate",
    "load_report",
    "write_reports",
]
