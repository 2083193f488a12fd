"""The recipe language: pydantic models with help text and closed choices.

Every field has a description (``ladle schema`` turns them into a JSON Schema that
editors use for completion) and every choice is a ``Literal``. Unknown keys are
errors: a typo must never silently fall back to a default. Cross-field rules that
would otherwise fail an hour into a run live in ``model_validator``s here, so
``ladle validate`` catches them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)]
"""A plain name (recipe, run folder): no path separators, no leading dot, so no `..`."""

TEMPLATE_SUFFIXES = (".jinja", ".j2", ".jinja2")


def template_kind(value: str) -> Literal["inline", "path", "builtin"]:
    """How ``data.template`` is read: the one rule the loader, prep and training share.

    Jinja text contains ``{{`` or ``{%``; a value ending in a template suffix or holding a
    path separator is a file path (relative to the recipe); anything else names a builtin.
    """
    if "{{" in value or "{%" in value:
        return "inline"
    if value.endswith(TEMPLATE_SUFFIXES) or "/" in value or "\\" in value:
        return "path"
    return "builtin"


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
    adapter: str | None = Field(
        None,
        description="A peft adapter folder to start from, e.g. `RUN/adapter` of an SFT run "
        "(relative to the recipe). Training continues that adapter; for DPO the reference "
        "model is base + this adapter as loaded, the recommended path for preference tuning.",
    )


# --------------------------------------------------------------------------- data

Format = Literal["messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference"]


class GenerateSpec(Section):
    name: Literal["tickets", "tickets-preference", "general-skills"] = Field(
        description="Builtin generator: `tickets` (support ticket -> JSON record, messages "
        "format), `tickets-preference` (correct vs corrupted JSON, preference format) or "
        "`general-skills` (arithmetic, unit conversion, output formats with exact answers: "
        "a regression suite)."
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
        "(prompt/chosen/rejected pairs for DPO, ORPO and KTO; for KTO also single "
        "prompt/completion/label rows, label true = desirable).",
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
    """Text normalisation before hashing (field names are the Rust core's options)."""

    nfkc: bool = Field(True, description="Unicode NFKC normalisation.")
    lowercase: bool = Field(True, description="Lowercase before hashing.")
    strip_punctuation: bool = Field(True, description="Strip punctuation.")
    collapse_whitespace: bool = Field(True, description="Collapse runs of whitespace to one space.")
    digits_to_zero: bool = Field(
        False,
        description='Map digit runs to 0 (numbers stop counting: "page 3" equals "page 4").',
    )


DedupFields = Literal["conversation", "user", "assistant", "prompt"]


class DedupSpec(Section):
    """The one dedup configuration: recipes (`data.dedup`), `ladle dedup`'s flags and the
    Python API all build this. Field names are the Rust core's option names."""

    enabled: bool = Field(True, description="Run exact and near-duplicate removal in `prep`.")
    exact: bool = Field(True, description="Remove exact duplicates of the normalised text.")
    near: bool = Field(True, description="Remove MinHash near-duplicates.")
    threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Jaccard similarity at or above which two rows are near duplicates.",
    )
    ngram: int = Field(5, ge=1, le=32, description="Words per shingle.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    scheme: Literal["fast", "datasketch", "datasketch-legacy"] = Field(
        "fast",
        description="Shingle hash. `fast`: xxh3; `datasketch`/`datasketch-legacy`: signatures "
        "equal datasketch.MinHash's (default / legacy scheme) bit for bit.",
    )
    seed: int = Field(1, ge=0, lt=2**32, description="MinHash permutation seed.")
    fields: DedupFields = Field(
        "conversation",
        description="What defines identity: the whole conversation, user turns only (same "
        "question, other answers), assistant turns, or the prompt.",
    )
    keep: Literal["first", "longest"] = Field("first", description="Which cluster member stays.")
    verify: bool = Field(True, description="Check LSH candidates by true Jaccard.")
    normalize: bool | NormalizeSpec = Field(
        default_factory=NormalizeSpec,
        description="Text normalisation before hashing: false hashes texts as given, true "
        "or a mapping of options normalises.",
    )
    bands: tuple[int, int] | None = Field(
        None, description="Explicit LSH (bands, rows); default: chosen for the threshold."
    )
    lsh_weights: tuple[float, float] | None = Field(
        None,
        description="(false-positive, false-negative) weights for choosing bands; default "
        "(0.1, 0.9) with verify, (0.5, 0.5) without.",
    )
    decontaminate: bool = Field(
        True, description="Drop train rows that duplicate an eval prompt (exact or near)."
    )
    decontaminate_fields: DedupFields = Field(
        "prompt", description="What of a train and an eval row is compared for leaks."
    )


class DataSection(Section):
    datasets: list[DatasetSpec] = Field(
        default_factory=list, min_length=1, description="Input datasets, train and eval."
    )
    template: str | None = Field(
        None,
        description="Chat template: null = the model's own; inline Jinja text (contains `{{` or "
        "`{%`); a file path (ends in .jinja, .j2 or .jinja2, or contains `/`), resolved "
        "relative to the recipe, which must exist; else a builtin name (`chatml`).",
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
    engine: Literal["local", "ray"] = Field(
        "local",
        description="Where prep and dedup run: `local` (this process) or `ray` (a Ray cluster; "
        "`--address`, default a local instance). Same output bytes either way.",
    )


# --------------------------------------------------------------------------- train


class LoraSpec(Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank. Higher: more capacity, more memory.")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: str | list[str] = Field(
        "all-linear", description="`all-linear` or module names, e.g. [q_proj, v_proj]."
    )


# Methods that train on preference data (format: preference), through Ladle's own loop.
PREFERENCE_METHODS = ("dpo", "orpo", "kto")


class PreferenceSpec(Section):
    """What every preference objective shares."""

    max_prompt_length: int | None = Field(
        None, ge=1, description="Truncate prompts to this many tokens (from the left)."
    )


class DpoSpec(PreferenceSpec):
    beta: float = Field(0.1, gt=0, description="KL strength: lower lets the policy drift further.")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="DPO loss.")
    sft_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of an NLL (SFT) term on the chosen answers, added to the DPO loss "
        "(RPO; TRL's `rpo_alpha`). Keeps the chosen answers likely while the margin grows: "
        "without it DPO on pairs that share most tokens can push both answers down "
        "(likelihood displacement). 0 = plain DPO.",
    )


class OrpoSpec(PreferenceSpec):
    beta: float = Field(
        0.1,
        gt=0,
        description="Weight of the odds-ratio term added to the chosen answers' NLL (the "
        "paper's lambda; TRL's `beta`). No reference model: ORPO needs no SFT start.",
    )


class KtoSpec(PreferenceSpec):
    beta: float = Field(0.1, gt=0, description="KL strength: lower lets the policy drift further.")
    desirable_weight: float = Field(
        1.0,
        gt=0,
        description="Loss weight of desirable examples (label true). With unbalanced data keep "
        "desirable_weight x #desirable / (undesirable_weight x #undesirable) in [1, 4/3] "
        "(the KTO paper's advice).",
    )
    undesirable_weight: float = Field(
        1.0, gt=0, description="Loss weight of undesirable examples (label false)."
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
    method: Literal["sft", "dpo", "orpo", "kto", "grpo"] = Field(
        "sft",
        description="Supervised fine-tuning; DPO or ORPO (reference-free) on preference pairs; "
        "KTO on completions labelled desirable/undesirable (`label: true/false`; a pair "
        "counts as one of each); or GRPO: reinforcement from programmatic rewards "
        "(train.grpo.rewards) on the train split's prompts.",
    )
    adapter: Literal["lora", "qlora", "dora", "full"] = Field(
        "lora",
        description="`lora`; `qlora` (LoRA over a 4-bit NF4 base); `dora` (weight-decomposed "
        "LoRA); `full` (all weights, most memory).",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA/QLoRA/DoRA settings.")
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO settings (method: dpo).")
    orpo: OrpoSpec = Field(default_factory=OrpoSpec, description="ORPO settings (method: orpo).")
    kto: KtoSpec = Field(default_factory=KtoSpec, description="KTO settings (method: kto).")
    grpo: GrpoSpec = Field(
        default_factory=lambda: GrpoSpec(),  # defined below, next to the metrics
        description="GRPO settings (method: grpo).",
    )
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
        8,
        ge=1,
        description="Examples per micro-batch for padded SFT and preference methods (pairs; "
        "KTO: labelled completions, at least 2: its KL estimate pairs each prompt with "
        "another example's completion).",
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
    "judge",
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
    judge: JudgeSpec | None = Field(
        None, description="judge: the model or endpoint that judges, its rubric and mode."
    )
    label: str | None = Field(None, description="Name shown in reports (default: name).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def key(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _params(self) -> MetricSpec:
        needs = {
            "regex": "pattern",
            "json_schema": "schema_",
            "custom": "function",
            "judge": "judge",
        }
        attr = needs.get(self.name)
        if attr and getattr(self, attr) is None:
            raise ValueError(f"metric {self.name!r} needs `{attr.rstrip('_')}`")
        return self

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


# GRPO's rewards are evaluation metrics, so they are defined next to them.


class RewardSpec(MetricSpec):
    """An evaluation metric used as a GRPO reward: the same names and parameters as
    ``evaluate.metrics``, scored by the same code, times a weight."""

    weight: float = Field(
        1.0,
        description="Multiplier of this metric in the total reward (negative: a penalty, "
        "e.g. on `length`). Components are summed, then normalised per group.",
    )

    @model_validator(mode="after")
    def _per_completion(self) -> RewardSpec:
        if self.weight == 0:
            raise ValueError("a reward with weight 0 does nothing: remove it")
        if self.name == "judge":
            raise ValueError("`judge` needs a model to answer: not available as a GRPO reward")
        if self.name == "macro_f1":
            raise ValueError(
                "macro_f1 is a corpus-level score with no per-completion value; use "
                "label_accuracy with the same `field` as the reward"
            )
        return self


class GrpoSpec(Section):
    rewards: list[RewardSpec] = Field(
        default_factory=list,
        description="Rewards: metric specs as in evaluate.metrics, each with a `weight`, e.g. "
        "[json_valid, {name: json_field_accuracy, fields: [priority], weight: 2}].",
    )
    num_generations: int = Field(
        4,
        ge=2,
        le=256,
        description="Group size: completions sampled per prompt; advantages are rewards "
        "relative to the group's mean. Larger: less noisy advantages, more generation time.",
    )
    prompts_per_step: int = Field(
        2, ge=1, description="Prompts per micro-batch (each with num_generations completions)."
    )
    max_completion_tokens: int = Field(
        64, ge=1, le=65_536, description="Generation budget per completion."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        le=10,
        description="Sampling temperature (too low: identical completions, no signal).",
    )
    kl_coef: float = Field(
        0.0,
        ge=0,
        description="KL penalty to the starting model (TRL's beta). 0: no reference model is "
        "kept (TRL's and Dr. GRPO's default); > 0 with model.adapter: a frozen copy of that "
        "adapter is the reference.",
    )
    clip_range: float = Field(
        0.2, gt=0, lt=1, description="PPO-style clipping of the probability ratio (epsilon)."
    )
    loss: Literal["grpo", "dr_grpo", "dapo"] = Field(
        "dapo",
        description="Token-loss normalisation: `grpo` per sequence (length-biased), `dr_grpo` "
        "by a constant (max_completion_tokens), `dapo` by the tokens of the whole batch.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the reward std of the group, of the batch, or not "
        "at all (Dr. GRPO: `none` avoids a question-difficulty bias).",
    )
    log_completions_every: int = Field(
        10,
        ge=0,
        description="Every N steps write the step's completions with their rewards to "
        "completions.jsonl in the run folder (0: never).",
    )


class GateCondition(Section):
    metric: str = Field(description="Metric key (name or label), or prompt_tokens/latency_p50...")
    min: float | None = Field(None, description="Candidate value must be at least this.")
    max: float | None = Field(None, description="Candidate value must be at most this.")
    min_gain: float | None = Field(
        None,
        description="The improvement must be at least this: candidate - baseline where higher "
        "is better, baseline - candidate where lower is better (tokens, latency, cost).",
    )
    max_regression: float | None = Field(
        None,
        ge=0,
        description="The worsening (in the measure's bad direction) may be at most this. With "
        "`significant: true` and no min_gain: a non-inferiority test on the interval.",
    )
    max_ratio: float | None = Field(
        None,
        gt=0,
        description="candidate / baseline (lower-is-better measures) or baseline / candidate "
        "(higher-is-better ones) must be at most this; below 1 means better.",
    )
    significant: bool = Field(
        False,
        description="The 95% interval of the improvement must lie above 0 (above "
        "-max_regression for non-inferiority). An interval straddling it gives the verdict "
        "`insufficient evidence` (exit 3).",
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


class EndpointSpec(Section):
    """An OpenAI-compatible chat-completions server: a hosted API, vLLM, llama.cpp's
    llama-server, Ollama, TGI or ``transformers serve``."""

    url: str = Field(
        description="Base URL of the API, e.g. `https://api.openai.com/v1` or "
        "`http://127.0.0.1:8000/v1` (the client appends /chat/completions)."
    )
    model: str | None = Field(
        None,
        description="Model name the server expects in requests. None: the one model the "
        "server lists at /models (an error if it lists several).",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the API key (the key itself "
        "never goes in a recipe, report, manifest or log). None: no key (local servers).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers (not credentials: use api_key_env).",
    )
    max_concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Per-request timeout, seconds.")
    max_retries: int = Field(
        3,
        ge=0,
        le=10,
        description="Retries of 429 / 5xx / connection errors, with exponential backoff that "
        "honours Retry-After. A request still failing is a counted error, never a zero.",
    )
    stream: bool = Field(
        False, description="Stream responses, which also measures time to first token."
    )

    @model_validator(mode="after")
    def _no_secrets(self) -> EndpointSpec:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        secret = {"authorization", "api-key", "x-api-key", "proxy-authorization"}
        if any(k.lower() in secret for k in self.headers):
            raise ValueError(
                "credentials do not belong in a recipe: put the key in an environment "
                "variable and name it in api_key_env"
            )
        return self


class ContestantSpec(PromptSpec):
    """A model or endpoint with its prompt. Neither `model` nor `endpoint`: the recipe's
    base model (a baseline) or the fine-tuned run (the candidate)."""

    name: Name | None = Field(
        None, description="Name in reports (default: `baseline`, `baseline-2`, ...)."
    )
    model: str | None = Field(
        None,
        description="A model in the forms of model.base (builtin:NAME, local folder, hub id) "
        "or another run's folder / adapter folder.",
    )
    endpoint: EndpointSpec | None = Field(
        None, description="An OpenAI-compatible server instead of a local model."
    )
    price_per_1m_input: float | None = Field(
        None, ge=0, description="Price per 1M input (prompt) tokens, e.g. a hosted API's."
    )
    price_per_1m_output: float | None = Field(
        None, ge=0, description="Price per 1M output (completion) tokens."
    )
    price_per_hour: float | None = Field(
        None,
        ge=0,
        description="Self-hosting price per hour of the hardware; with the measured throughput "
        "it gives the cost per request.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ContestantSpec:
        if self.model is not None and self.endpoint is not None:
            raise ValueError("a contestant is a `model` or an `endpoint`, not both")
        if self.price_per_hour is not None and (
            self.price_per_1m_input is not None or self.price_per_1m_output is not None
        ):
            raise ValueError("price by tokens (price_per_1m_*) or by the hour, not both")
        return self


class CandidateSpec(ContestantSpec):
    merge: bool | None = Field(
        None,
        description="Merge the adapter into the base before generating. Default: merge a "
        "LoRA/DoRA adapter on a full-precision base (same model, faster), but evaluate a "
        "QLoRA run as trained and served: its 4-bit base with the adapter applied by peft. "
        "`true` merges a QLoRA adapter into the full-precision base instead; the report "
        "says which was evaluated.",
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
    prefix_cache: bool = Field(
        True,
        description="Prefill the token prefix that all prompts share (system prompt, few-shot "
        "turns) once and reuse its KV cache in every batch and in the latency pass, as a "
        "server with prefix caching does; the report says how many tokens. `false`: every "
        "prompt is prefilled in full (latency and throughput of a server without it). "
        "Local models only.",
    )


class PowerSpec(Section):
    power: float = Field(0.8, gt=0, lt=1, description="Planned power of the gate's tests.")
    discordance: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Assumed share of rows where baseline and candidate disagree on a binary "
        "metric (unknown before training; 0.5 is conservative).",
    )
    sd: float = Field(
        0.5, gt=0, description="Assumed sd of the per-row difference of a [0, 1] mean metric."
    )


DEFAULT_RUBRIC = (
    "You grade an answer against a reference answer. 1: wrong or off-topic; 3: partly right; "
    "5: as correct and complete as the reference."
)


class JudgeSpec(Section):
    """A model that grades free-text answers (an LLM judge)."""

    model: str | None = Field(
        None,
        description="Judge model in the forms of model.base (default: the recipe's base model).",
    )
    endpoint: EndpointSpec | None = Field(
        None, description="A judge behind an OpenAI-compatible server instead."
    )
    rubric: str = Field(DEFAULT_RUBRIC, description="Grading instructions given to the judge.")
    mode: Literal["score", "pairwise"] = Field(
        "score",
        description="`score`: each output graded 1..scale against the reference (scaled to "
        "0..1). `pairwise`: baseline vs candidate output, asked twice with the order swapped; "
        "verdicts that disagree count as ties; the value is the candidate's win rate.",
    )
    scale: int = Field(5, ge=2, le=10, description="Top of the score scale (score mode).")
    max_new_tokens: int = Field(8, ge=1, le=256, description="Judge's reply budget.")

    @model_validator(mode="after")
    def _one_source(self) -> JudgeSpec:
        if self.model is not None and self.endpoint is not None:
            raise ValueError("a judge is a `model` or an `endpoint`, not both")
        return self


class SuiteSpec(Section):
    """An extra eval set with its own metrics and gate, typically non-inferiority
    (`max_regression`) on skills the base model already had."""

    name: Name = Field(description="Suite name in reports.")
    dataset: DatasetSpec = Field(
        description="The suite's rows (any format the loader reads; `generate` works too). "
        "Each contestant answers them with the row's own prompt: no system prompt or "
        "few-shot examples of the main task."
    )
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: [MetricSpec(name="exact_match")],
        description="Metrics of this suite.",
    )
    gate: list[GateCondition] = Field(
        default_factory=list, description="Conditions on this suite, checked like the main gate."
    )
    limit: int | None = Field(None, ge=1, description="Use the first N rows only.")


class EvaluateSection(Section):
    enabled: bool = Field(True, description="Run the before/after evaluation.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N eval rows only.")
    baseline: ContestantSpec = Field(
        default_factory=lambda: ContestantSpec(few_shot=3),
        description="The prompted model to beat: by default the base model with a system "
        "prompt and few-shot examples; or another `model`, or an `endpoint`.",
    )
    baselines: list[ContestantSpec] | None = Field(
        None,
        min_length=1,
        description="Several baselines, each with its own prompt (e.g. the base model 0-shot, "
        "3-shot, and a served large model); every candidate is compared with each. Replaces "
        "`baseline`.",
    )
    candidate: CandidateSpec = Field(
        default_factory=CandidateSpec,
        description="The fine-tuned model's (usually minimal) prompt and how it is loaded. A "
        "`model` or `endpoint` here is evaluated as one more candidate (e.g. the fine-tuned "
        "model served).",
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
    latency_sample: int = Field(
        32,
        ge=0,
        description="Local models: examples timed one at a time (batch size 1) for honest "
        "per-request latency, separately from the batched quality pass. 0: no latency pass.",
    )
    training_price_per_hour: float | None = Field(
        None,
        ge=0,
        description="$/hour of the training hardware, for the break-even volume (default: the "
        "candidate's price_per_hour).",
    )
    max_failed_requests: int = Field(
        0,
        ge=0,
        description="Endpoint requests that may fail (after retries) before the gate fails.",
    )
    suites: list[SuiteSpec] = Field(
        default_factory=list,
        description="Regression suites: extra eval sets, each with its own metrics and gate.",
    )
    power: PowerSpec = Field(
        default_factory=PowerSpec,
        description="Assumptions of the power plan printed before training.",
    )
    cache: bool = Field(
        True,
        description="Cache endpoint responses by content under $LADLE_HOME/eval-cache "
        "(`--no-cache` turns it off for one run).",
    )

    @model_validator(mode="after")
    def _custom_needs_code(self) -> EvaluateSection:
        if any(m.name == "custom" for m in self.metrics) and not self.allow_code:
            raise ValueError("custom metrics import user code: set evaluate.allow_code: true")
        if self.baselines is not None and "baseline" in self.model_fields_set:
            raise ValueError("give `baseline` or `baselines`, not both")
        names = [n for n, _ in self.named_baselines()]
        if len(set(names)) != len(names):
            raise ValueError(f"baseline names must differ: {names}")
        return self

    def named_baselines(self) -> list[tuple[str, ContestantSpec]]:
        """Each baseline with its report name (``baseline`` when there is one)."""
        specs = self.baselines or [self.baseline]
        if len(specs) == 1:
            return [(specs[0].name or "baseline", specs[0])]
        return [(s.name or f"baseline-{i + 1}", s) for i, s in enumerate(specs)]

    @property
    def few_shot_needed(self) -> int:
        """The most few-shot examples any contestant asks for."""
        return max(s.few_shot for _, s in [*self.named_baselines(), ("c", self.candidate)])


# --------------------------------------------------------------------------- output


class OutputSection(Section):
    dir: str = Field("runs", description="Where run folders go (relative to the recipe).")
    run_name: Name | None = Field(
        None,
        description="Run folder name inside `dir` (default: recipe name + timestamp): a plain "
        "name (letters, digits, `.`, `_`, `-`), never a path.",
    )
    overwrite: bool = Field(
        False,
        description="Replace an existing run folder of the same name, once the new run has "
        "finished (only a folder holding a Ladle run's run.json is ever replaced).",
    )


# --------------------------------------------------------------------------- recipe


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
        method = self.train.method
        if method in PREFERENCE_METHODS and formats - {"preference"}:
            problems.append(
                f"train.method: {method} needs `format: preference` train datasets "
                f"(found {sorted(formats)})"
            )
        if method == "sft" and "preference" in formats:
            problems.append("preference data trains with train.method: dpo, orpo or kto, not sft")
        if method == "kto" and self.train.micro_batch_size < 2:
            problems.append(
                "train.method: kto needs train.micro_batch_size >= 2 (its KL estimate pairs "
                "each prompt with another example's completion in the micro-batch)"
            )
        if self.train.method == "grpo":
            problems += self._grpo_problems(formats)
        if self.model.quantize == "nf4" and self.train.adapter != "qlora":
            problems.append(
                "model.quantize: nf4 trains 4-bit weights only with train.adapter: qlora"
            )
        if self.model.adapter is not None and self.train.adapter == "full":
            problems.append(
                "model.adapter continues a peft adapter: use train.adapter lora, qlora or dora"
            )
        if self.train.adapter == "full" and self.train.method in ("dpo", "kto"):
            problems.append(
                f"full-weight {self.train.method.upper()} needs a second model copy as "
                "reference; use a LoRA adapter (or method: orpo, which has no reference)"
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

    def _grpo_problems(self, formats: Collection[str]) -> list[str]:
        out: list[str] = []
        rewards = self.train.grpo.rewards
        if not rewards:
            out.append(
                "train.method: grpo needs train.grpo.rewards, e.g. [json_valid] (the names "
                "of evaluate.metrics)"
            )
        if any(r.name == "custom" for r in rewards) and not self.evaluate.allow_code:
            out.append("custom rewards import user code: set evaluate.allow_code: true")
        keys = [r.key for r in rewards]
        if len(set(keys)) != len(keys):
            out.append(f"train.grpo.rewards: two rewards share a name {keys}: give one a `label`")
        if "text" in formats:
            out.append("train.method: grpo needs conversations (prompts), not `format: text`")
        if self.train.eval_every:
            # A held-out loss means nothing for a policy-gradient objective; the
            # before/after evaluation (evaluate:) is how a GRPO run is judged.
            out.append(
                "train.eval_every (held-out loss) is for sft/dpo/orpo/kto; set it to 0 for grpo"
            )
        return out

    def has_eval_split(self) -> bool:
        return any(d.split == "eval" for d in self.data.datasets) or bool(self.data.eval_fraction)


MetricSpec.model_rebuild()  # JudgeSpec is defined after MetricSpec
TrainSection.model_rebuild()  # GrpoSpec is defined after TrainSection
