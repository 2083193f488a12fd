"""The recipe language: pydantic models with help text and closed choices.

Every field has a description (``ladle schema`` turns them into a JSON Schema that
editors use for completion) and every choice is a ``Literal``. Unknown keys are
errors: a typo must never silently fall back to a default. Cross-field rules that
would otherwise fail an hour into a run live in ``model_validator``s here, so
``ladle validate`` catches them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- model


class ModelSection(Section):
    base: str = Field(
        "builtin:smollm2-135m-instruct",
        description="Base model: `builtin:NAME` (see `ladle models`), a local Hugging Face "
        "folder (relative to the recipe), or a hub id `org/name` (needs the hub or its cache).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight dtype when loading. `auto`: float32 on CPU (bf16 autocast does the "
        "speed-up there), the checkpoint's dtype on GPU.",
    )
    quantize: Literal["none", "nf4"] = Field(
        "none",
        description="`nf4`: pre-quantize the base once into Ladle's cache (Rust, streaming) and "
        "load it as a bitsandbytes 4-bit model. Needs `train.adapter: qlora`.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa",
        description="Attention kernel. All three isolate packed documents by position_ids when "
        "the KV cache is off (Ladle turns it off for training); flash_attention_2 needs a GPU "
        "and the flash-attn package.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow model code from the checkpoint. Off: weights only."
    )


# --------------------------------------------------------------------------- data

Format = Literal["messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference"]


class GenerateSpec(Section):
    name: Literal["tickets", "tickets-preference"] = Field(
        description="Builtin generator: `tickets` (support ticket -> JSON record, messages "
        "format) or `tickets-preference` (correct vs corrupted JSON, preference format)."
    )
    rows: int = Field(2000, ge=1, le=10_000_000, description="Rows to generate.")
    seed: int = Field(7, ge=0, description="Generator seed (eval sets use a different one).")


class DatasetSpec(Section):
    path: str | list[str] = Field(
        description="File, glob, or list of them (JSONL, JSON, Parquet, CSV) or a `datasets` "
        "save_to_disk folder. Relative paths resolve against the recipe file."
    )
    format: Format = Field(
        "messages",
        description="Row layout: `messages` (OpenAI roles), `sharegpt` (from/value), `alpaca` "
        "(instruction/input/output), `prompt_completion`, `text` (raw), `preference` "
        "(prompt/chosen/rejected, for DPO).",
    )
    split: Literal["train", "eval"] = Field("train", description="Which split these rows feed.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping from the format's field names to this file's, e.g. "
        "`{messages: conversation}` or `{instruction: question, output: answer}`.",
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="Role renames for `sharegpt`/`messages`, e.g. `{human: user, gpt: assistant}`.",
    )
    weight: float = Field(
        1.0, gt=0, description="Sampling weight relative to the other train datasets (1.0 = as is)."
    )
    limit: int | None = Field(None, ge=1, description="Use at most this many rows (first N).")
    system: str | None = Field(
        None, description="System prompt added to every example that has none."
    )
    generate: GenerateSpec | None = Field(
        None,
        description="Write `path` with a builtin deterministic generator if it does not exist "
        "yet (the quickstart's data). The file is ordinary data afterwards.",
    )

    @model_validator(mode="after")
    def _generate_one_file(self) -> DatasetSpec:
        if self.generate is not None and (
            isinstance(self.path, list) or any(c in self.path for c in "*?[")
        ):
            raise ValueError("`generate` writes one file: `path` must be a single file, not a glob")
        return self


class NormalizeSpec(Section):
    nfkc: bool = Field(True, description="Unicode NFKC normalisation.")
    lowercase: bool = Field(True, description="Lowercase before hashing.")
    punctuation: bool = Field(True, description="Strip punctuation.")
    digits: bool = Field(False, description="Map digit runs to 0 (numbers stop counting).")


class DedupSpec(Section):
    enabled: bool = Field(True, description="Run exact and near-duplicate removal in `prep`.")
    exact: bool = Field(True, description="Remove exact duplicates of the normalised text.")
    near: bool = Field(True, description="Remove MinHash near-duplicates.")
    threshold: float = Field(
        0.8, gt=0, lt=1, description="Jaccard similarity at which two rows are near-duplicates."
    )
    ngram: int = Field(5, ge=1, le=32, description="Word n-gram size of the shingles.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    scheme: Literal["fast", "datasketch"] = Field(
        "fast", description="`datasketch`: SHA-1 shingles, signatures equal datasketch's."
    )
    fields: Literal["conversation", "user", "assistant", "prompt"] = Field(
        "conversation",
        description="What defines identity: the whole conversation, user turns only (same "
        "question, other answers), assistant turns, or the preference prompt.",
    )
    keep: Literal["first", "longest"] = Field("first", description="Which cluster member stays.")
    verify: bool = Field(True, description="Check LSH candidates by true Jaccard.")
    normalize: NormalizeSpec = Field(
        default_factory=NormalizeSpec, description="Text normalisation before hashing."
    )
    decontaminate: bool = Field(
        True, description="Drop train rows that duplicate an eval prompt (exact or near)."
    )


class DataSection(Section):
    datasets: list[DatasetSpec] = Field(
        default_factory=list, min_length=1, description="Input datasets, train and eval."
    )
    template: str | None = Field(
        None,
        description="Chat template: null = the model's own, a builtin name (`chatml`), a path to "
        "a .jinja file, or inline Jinja text.",
    )
    max_length: int = Field(
        2048, ge=16, le=1_048_576, description="Tokens per packed row / longest example."
    )
    train_on: Literal["assistant", "last", "all"] = Field(
        "assistant",
        description="Which tokens carry loss: every assistant turn, the last one, or all.",
    )
    overlong: Literal["auto", "drop", "truncate", "split"] = Field(
        "auto",
        description="Examples longer than max_length. `auto`: drop chat, split raw text.",
    )
    packing: Literal["bfd", "ffd", "none"] = Field(
        "bfd",
        description="`bfd` best-fit decreasing over the whole dataset (fewest rows), `ffd` "
        "first-fit decreasing, `none` one example per row (padded batches).",
    )
    shuffle: bool = Field(True, description="Shuffle packed rows (seeded by `seed`).")
    strict: bool = Field(False, description="Bad rows are fatal instead of counted and skipped.")
    eval_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Hold out this fraction of train rows as eval when no eval split is given.",
    )
    dedup: DedupSpec = Field(
        default_factory=DedupSpec,
        description="Exact and near-duplicate removal, and train/eval decontamination.",
    )


# --------------------------------------------------------------------------- train


class LoraSpec(Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank. Higher: more capacity, more memory.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="`all-linear` or module names, e.g. [q_proj, v_proj]."
    )


class DpoSpec(Section):
    beta: float = Field(0.1, gt=0, description="KL strength: lower lets the policy drift further.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="DPO loss.")
    max_prompt_length: int | None = Field(
        None, ge=1, description="Truncate prompts to this many tokens (from the left)."
    )


Tracker = Literal["tensorboard", "mlflow", "wandb", "none"]


class EarlyStopping(Section):
    patience: int = Field(
        3, ge=1, description="Stop after this many evaluations in a row without improvement."
    )
    min_delta: float = Field(
        0.0, ge=0, description="An eval loss must fall by more than this to count as improved."
    )


class TrainSection(Section):
    method: Literal["sft", "dpo"] = Field("sft", description="Supervised fine-tuning or DPO.")
    adapter: Literal["lora", "qlora", "dora", "full"] = Field(
        "lora",
        description="`lora`; `qlora` (LoRA over a 4-bit NF4 base); `dora` (weight-decomposed "
        "LoRA); `full` (all weights, most memory).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA/QLoRA/DoRA settings.")
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO settings (method: dpo).")
    lr: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored if max_steps).")
    max_steps: int | None = Field(
        None, ge=0, description="Stop after this many optimizer steps (0 = no training)."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps warming up.")
    warmup_steps: int = Field(0, ge=0, description="Warm-up steps (overrides warmup_ratio).")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    micro_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="Packed data: tokens per micro-batch (default data.max_length, one row).",
    )
    micro_batch_size: int = Field(
        8, ge=1, description="Examples per micro-batch for padded SFT and DPO."
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for activation memory.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="`auto`: bf16 autocast when the hardware has it (fastest on AVX-512 bf16 "
        "CPUs and modern GPUs), else fp32.",
    )
    save_every: int = Field(
        100, ge=0, description="Checkpoint every N steps (0 = only at the end)."
    )
    keep_checkpoints: int = Field(
        2, ge=0, description="Keep the newest N checkpoints (0 = keep all); older ones are deleted."
    )
    log_every: int = Field(1, ge=1, description="Write metrics every N steps.")
    report_to: list[Tracker] = Field(
        default_factory=lambda: list[Tracker](["tensorboard"]), description="Experiment trackers."
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    fsdp: bool = Field(
        False,
        description="Under torchrun/accelerate launch: shard weights, gradients and optimizer "
        "state across processes (FSDP2, one unit per decoder layer) instead of DDP replicas. "
        "For models that do not fit one device; lora, dora and full (not qlora).",
    )
    eval_every: int = Field(
        0,
        ge=0,
        description="Held-out loss every N steps (and before the first and after the last) on "
        "the eval split's reference answers, no generation; logged to metrics.jsonl, "
        "TensorBoard and loss_curve.png. 0 = off.",
    )
    eval_max_rows: int = Field(
        128,
        ge=0,
        description="Held-out rows scored at each evaluation: the first N of the eval split "
        "(0 = all). Each evaluation costs about a third of a training step per token.",
    )
    early_stopping: EarlyStopping | None = Field(
        None,
        description="Stop when the held-out loss stops improving (needs eval_every), e.g. "
        "`{patience: 3, min_delta: 0.01}`.",
    )
    keep_best: bool = Field(
        False,
        description="Write the weights of the evaluation with the lowest held-out loss instead "
        "of the last step's (needs eval_every; keeps a copy of the trainable weights in memory).",
    )

    @model_validator(mode="after")
    def _eval_needed(self) -> TrainSection:
        for name in ("early_stopping", "keep_best"):
            if getattr(self, name) and not self.eval_every:
                raise ValueError(f"train.{name} needs train.eval_every > 0 (a held-out loss)")
        return self


# --------------------------------------------------------------------------- evaluate

MetricName = Literal[
    "exact_match",
    "normalized_match",
    "contains",
    "regex",
    "json_valid",
    "json_schema",
    "json_field_accuracy",
    "label_accuracy",
    "macro_f1",
    "rouge_l",
    "length",
    "custom",
]


class MetricSpec(Section):
    name: MetricName = Field(description="Metric to compute per example and aggregate.")
    fields: list[str] | None = Field(
        None, description="json_field_accuracy: fields to score (default: all in the reference)."
    )
    pattern: str | None = Field(
        None,
        description="regex: pattern the whole (stripped) output must match (`re.fullmatch`, "
        "DOTALL); write `.*X.*` to accept text around X.",
    )
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="json_schema: the JSON Schema outputs must satisfy."
    )
    field: str | None = Field(
        None, description="label_accuracy/macro_f1: JSON field holding the label (else whole text)."
    )
    function: str | None = Field(
        None, description="custom: `module:function(prediction, reference) -> float`."
    )
    label: str | None = Field(None, description="Name shown in reports (default: name).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def key(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _params(self) -> MetricSpec:
        needs = {"regex": "pattern", "json_schema": "schema_", "custom": "function"}
        attr = needs.get(self.name)
        if attr and getattr(self, attr) is None:
            raise ValueError(f"metric {self.name!r} needs `{attr.rstrip('_')}`")
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class GateCondition(Section):
    metric: str = Field(description="Metric key (name or label), or prompt_tokens/latency_p50...")
    min: float | None = Field(None, description="Candidate value must be at least this.")
    max: float | None = Field(None, description="Candidate value must be at most this.")
    min_gain: float | None = Field(
        None, description="Candidate minus baseline must be at least this."
    )
    max_regression: float | None = Field(
        None, ge=0, description="Baseline minus candidate may be at most this."
    )
    max_ratio: float | None = Field(
        None, gt=0, description="Candidate / baseline must be at most this (cost, latency)."
    )
    significant: bool = Field(
        False, description="The difference must be significant (bootstrap CI excludes 0)."
    )

    @model_validator(mode="after")
    def _some_bound(self) -> GateCondition:
        if (
            all(
                getattr(self, k) is None
                for k in ("min", "max", "min_gain", "max_regression", "max_ratio")
            )
            and not self.significant
        ):
            raise ValueError(
                "a gate condition needs one of min, max, min_gain, max_regression, max_ratio "
                "or significant: true"
            )
        return self


class PromptSpec(Section):
    system_prompt: str | None = Field(None, description="System prompt for this contestant.")
    few_shot: int = Field(
        0, ge=0, le=64, description="Few-shot examples drawn from TRAIN data (never eval)."
    )


class GenerationSpec(Section):
    max_new_tokens: int = Field(128, ge=1, description="Generation budget per example.")
    batch_size: int = Field(16, ge=1, description="Prompts per batch (left-padded).")
    do_sample: bool = Field(False, description="Greedy (false, deterministic) or sampling.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling.")
    num_samples: int = Field(1, ge=1, description="Samples per prompt (consistency).")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Compute precision while generating. `auto`: bf16 autocast where the "
        "hardware has native bf16 (AVX-512 bf16/AMX CPUs, modern GPUs), else fp32. `fp32` "
        "gives the most reproducible greedy outputs across machines.",
    )


class EvaluateSection(Section):
    enabled: bool = Field(True, description="Run the before/after evaluation.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N eval rows only.")
    baseline: PromptSpec = Field(
        default_factory=lambda: PromptSpec(few_shot=3),
        description="The prompted base model: system prompt plus few-shot examples.",
    )
    candidate: PromptSpec = Field(
        default_factory=PromptSpec, description="The fine-tuned model's (usually minimal) prompt."
    )
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec, description="How both contestants generate."
    )
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: [MetricSpec(name="exact_match")],
        description="Metrics, e.g. [json_valid, {name: json_field_accuracy, fields: [a, b]}].",
    )
    gate: list[GateCondition] = Field(
        default_factory=list, description="Conditions CI checks; any failure exits 1."
    )
    price_per_1k_prompt: float | None = Field(
        None, ge=0, description="Price per 1k prompt tokens, for the cost column."
    )
    price_per_1k_completion: float | None = Field(
        None, ge=0, description="Price per 1k completion tokens."
    )
    bootstrap: int = Field(1000, ge=100, description="Paired bootstrap resamples.")
    allow_code: bool = Field(False, description="Allow `custom` metrics to import user code.")

    @model_validator(mode="after")
    def _custom_needs_code(self) -> EvaluateSection:
        if any(m.name == "custom" for m in self.metrics) and not self.allow_code:
            raise ValueError("custom metrics import user code: set evaluate.allow_code: true")
        return self


# --------------------------------------------------------------------------- output


class OutputSection(Section):
    dir: str = Field("runs", description="Where run folders go (relative to the recipe).")
    run_name: str | None = Field(
        None, description="Run folder name (default: recipe name + timestamp)."
    )
    overwrite: bool = Field(False, description="Replace an existing run folder of the same name.")


# --------------------------------------------------------------------------- recipe

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]


class Recipe(Section):
    """A whole fine-tuning run: data -> model -> train -> evaluate -> report."""

    name: Name = Field(description="Recipe name, used in run folder names and reports.")
    seed: int = Field(42, ge=0, description="Seed for shuffling, sampling and training.")
    extends: str | None = Field(
        None, description="Base recipe to inherit from (deep merge; this file wins)."
    )
    model: ModelSection = Field(default_factory=ModelSection, description="The base model.")
    data: DataSection = Field(description="Datasets and how they become training rows.")
    train: TrainSection = Field(default_factory=TrainSection, description="How to train.")
    evaluate: EvaluateSection = Field(
        default_factory=EvaluateSection, description="Before/after evaluation and its gate."
    )
    output: OutputSection = Field(default_factory=OutputSection, description="Run folders.")

    @model_validator(mode="after")
    def _combinations(self) -> Recipe:
        problems: list[str] = []
        formats = {d.format for d in self.data.datasets if d.split == "train"}
        if self.train.method == "dpo" and formats - {"preference"}:
            problems.append(
                "train.method: dpo needs `format: preference` train datasets "
                f"(found {sorted(formats)})"
            )
        if self.train.method == "sft" and "preference" in formats:
            problems.append("preference data trains with train.method: dpo, not sft")
        if self.model.quantize == "nf4" and self.train.adapter != "qlora":
            problems.append(
                "model.quantize: nf4 trains 4-bit weights only with train.adapter: qlora"
            )
        if self.train.adapter == "full" and self.train.method == "dpo":
            problems.append(
                "full-weight DPO needs a second model copy as reference; use a LoRA adapter"
            )
        if (
            self.train.micro_batch_tokens is not None
            and self.data.packing != "none"
            and self.train.micro_batch_tokens < self.data.max_length
        ):
            problems.append(
                "train.micro_batch_tokens must be at least data.max_length when packing "
                "(a packed row is never split)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def has_eval_split(self) -> bool:
        return any(d.split == "eval" for d in self.data.datasets) or bool(self.data.eval_fraction)
