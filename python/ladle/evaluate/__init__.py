"""Before/after evaluation: the fine-tuned model against the prompted base model.

``evaluate(recipe, eval_rows, train_rows, candidates, output_dir)`` generates answers for
the baseline (base model + the recipe's system prompt and few-shot examples from the
train rows) and each candidate, scores them, puts a paired-bootstrap interval and a test
on every difference, checks the recipe's gate and writes the reports. Modules:
``metrics`` (scoring), ``stats`` (bootstrap, McNemar), ``prompts`` (rows, few-shot),
``generate`` (models, batched generation), ``gate``, ``report``, ``chart``, ``runner``.
"""

from ladle.evaluate.gate import GateResult
from ladle.evaluate.report import compare_reports, load_report
from ladle.evaluate.runner import Contestant, EvalReport, evaluate

__all__ = [
    "Contestant",
    "EvalReport",
    "GateResult",
    "compare_reports",
    "evaluate",
    "load_report",
]
