"""Loaders that map public data sets onto the 13 moderation categories.

Each loader reads one folder of `settings.data_dir` (see its SOURCE.md) and returns `LabeledText` rows.
A label is 1 (the source says the category applies), 0 (the source says it does not) or None (the source
says nothing about it: masked in the loss and in metrics). A positive child category makes its parent
positive; a negative parent makes its unlabelled children negative. Benign rows are 0 for every
category the source covers. Rows are deduplicated on normalised text within and across sources by
`load_all`, which also reports the files read so that their hashes can be recorded.

XSTest is kept out of `SOURCES`: it is the final test set (`load_xstest`).
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError
from bastion.core.taxonomy import BY_KEY, CATEGORY_KEYS

Labels = dict[str, int | None]

HATE = ("hate", "hate/threatening")
HARASS = ("harassment", "harassment/threatening")
ILLICIT = ("illicit", "illicit/violent")
SELF = ("self-harm", "self-harm/intent", "self-harm/instructions")
SEX = ("sexual", "sexual/minors")
VIOL = ("violence", "violence/graphic")
ALL = CATEGORY_KEYS

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class LabeledText:
    """One text with per-category labels (1, 0, or None = unknown) and the source it came from."""

    text: str
    labels: Labels
    source: str

    def any_harm(self) -> int | None:
        """1 if any category is positive, 0 if all are known negatives, else None."""
        values = list(self.labels.values())
        if any(v == 1 for v in values):
            return 1
        return 0 if all(v == 0 for v in values) and len(values) == len(ALL) else None


@dataclass
class LoadedData:
    """Rows of every source, with the files read (path relative to the data folder) per source."""

    rows: list[LabeledText]
    files: dict[str, list[Path]] = field(default_factory=dict)


def make_labels(pos: Iterable[str] = (), zero: Iterable[str] = ()) -> Labels:
    """Labels with `pos` positive (and their parents), `zero` negative (and their children), rest None."""
    labels: Labels = dict.fromkeys(ALL)
    for key in zero:
        labels[BY_KEY[key].key] = 0
    for key in pos:
        labels[BY_KEY[key].key] = 1
        parent = BY_KEY[key].parent
        if parent is not None:
            labels[parent] = 1
    for key in ALL:
        parent = BY_KEY[key].parent
        if parent is not None and labels[parent] == 0 and labels[key] is None:
            labels[key] = 0
    return labels


def _fam(*groups: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k for g in groups for k in g)


_URL = re.compile(r"https?://\S+")
_HANDLE = re.compile(r"@\w+")
_SPACE = re.compile(r"\s+")


def clean_social(text: str) -> str:
    """Normalise tweet-style text: HTML entities, handles, links, retweet markers, whitespace."""
    text = html.unescape(text)
    text = _URL.sub("", text)
    text = _HANDLE.sub("@user", text)
    text = re.sub(r"^\s*!*\s*RT\b:?", "", text)
    text = re.sub(r"\bRT\b", "", text)
    return _SPACE.sub(" ", text).strip()


def normalise_key(text: str) -> str:
    """Dedup key: lower case, collapsed whitespace."""
    return _SPACE.sub(" ", text.lower()).strip()


def _read_csv(path: Path, delimiter: str = ",") -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh, delimiter=delimiter)


def _read_jsonl(path: Path) -> Iterator[dict[str, object]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


Loader = Callable[[Path], tuple[list[LabeledText], list[Path]]]
SOURCES: dict[str, Loader] = {}


def _source(name: str) -> Callable[[Loader], Loader]:
    def decorator(fn: Loader) -> Loader:
        SOURCES[name] = fn
        return fn

    return decorator


@_source("davidson")
def load_davidson(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Davidson et al.: class 0 hate → hate; 1 offensive → not hate; 2 neither → no hate, no harassment."""
    path = root / "davidson-hate-offensive" / "labeled_data.csv"
    rows = []
    for r in _read_csv(path):
        cls = r["class"]
        if cls == "0":
            labels = make_labels(pos=["hate"])
        elif cls == "1":
            labels = make_labels(zero=["hate"])
        else:
            labels = make_labels(zero=_fam(HATE, HARASS))
        rows.append(LabeledText(clean_social(r["tweet"]), labels, "davidson"))
    return rows, [path]


@_source("toxic-spans")
def load_toxic_spans(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Toxic Spans: share of raters marking each span type; ≥ 0.5 positive, nobody marking it negative."""
    folder = root / "toxic-spans"
    files = [folder / "comments.csv", folder / "annotations.csv", folder / "spans.csv"]
    texts = {r["comment_id"]: r["comment_text"] for r in _read_csv(files[0])}
    raters: dict[str, set[str]] = defaultdict(set)
    not_toxic: Counter[str] = Counter()
    by_annotation: dict[str, str] = {}
    for r in _read_csv(files[1]):
        raters[r["comment_id"]].add(r["annotation"])
        by_annotation[r["annotation"]] = r["comment_id"]
        if r["not toxic"] == "True":
            not_toxic[r["comment_id"]] += 1
    marked: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in _read_csv(files[2]):
        kind = r["type"].strip()
        kind = {"Insu": "Insult", "Identity based": "Identity based Attack"}.get(kind, kind)
        comment = by_annotation.get(r["annotation"])
        if comment is not None:
            marked[comment][kind].add(r["annotation"])
    rows = []
    for cid, text in texts.items():
        n = len(raters.get(cid, ()))
        if n == 0:
            continue
        share = {k: len(v) / n for k, v in marked[cid].items()}
        insult, threat = share.get("Insult", 0.0), share.get("Threat", 0.0)
        identity = share.get("Identity based Attack", 0.0)
        pos: list[str] = []
        zero: list[str] = []
        if not_toxic[cid] / n > 0.5:
            zero += [*HATE, *HARASS, "violence"]
        else:
            for value, cats in ((insult, ["harassment"]), (identity, ["hate"])):
                if value >= 0.5:
                    pos += cats
                elif value == 0:
                    zero += cats
            if threat >= 0.5:
                pos += ["harassment/threatening", "violence"]
                if identity >= 0.5:
                    pos.append("hate/threatening")
            elif threat == 0:
                zero += ["harassment/threatening", "hate/threatening"]
        rows.append(LabeledText(text.strip(), make_labels(pos, zero), "toxic-spans"))
    return rows, files


@_source("hatexplain")
def load_hatexplain(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """HateXplain: hatespeech → hate; offensive → not hate (harassment when aimed at a user);
    normal → benign."""
    path = root / "hatexplain" / "preprocessed.csv"
    rows = []
    for r in _read_csv(path):
        raw = r["text"]
        text = raw.replace("<user>", "@user")
        if r["label"] == "2":
            labels = make_labels(pos=["hate"])
        elif r["label"] == "1":
            labels = make_labels(pos=["harassment"] if "<user>" in raw else [], zero=["hate"])
        else:
            labels = make_labels(zero=_fam(HATE, HARASS))
        rows.append(LabeledText(text, labels, "hatexplain"))
    return rows, [path]


@_source("implicit-hate")
def load_implicit_hate(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Latent Hatred: explicit or implicit hate → hate; stage-2 `threatening` → hate/threatening."""
    folder = root / "implicit-hate"
    stage1, stage2 = folder / "implicit_hate_v1_stg1_posts.tsv", folder / "implicit_hate_v1_stg2_posts.tsv"
    threatening = {
        r["post"]
        for r in _read_csv(stage2, "\t")
        if "threatening" in (r["implicit_class"], r["extra_implicit_class"])
    }
    rows = []
    for r in _read_csv(stage1, "\t"):
        if r["class"] in ("implicit_hate", "explicit_hate"):
            labels = make_labels(pos=["hate/threatening" if r["post"] in threatening else "hate"])
        elif r["class"] == "not_hate":
            labels = make_labels(zero=["hate"])
        else:
            continue
        rows.append(LabeledText(clean_social(r["post"]), labels, "implicit-hate"))
    return rows, [stage1, stage2]


@_source("stormfront")
def load_stormfront(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Stormfront sentences: hate → hate, noHate → not hate; `relation` and `idk/skip` dropped."""
    path = root / "stormfront-hate" / "sentences.csv"
    rows = []
    for r in _read_csv(path):
        if len(r["text"].strip()) <= 3 or r["label"] not in ("hate", "noHate"):
            continue
        labels = make_labels(pos=["hate"]) if r["label"] == "hate" else make_labels(zero=["hate"])
        rows.append(LabeledText(r["text"].strip(), labels, "stormfront"))
    return rows, [path]


@_source("mlma")
def load_mlma(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """MLMA: hateful at a group → hate; hostile at an individual → harassment; `normal` alone → benign."""
    path = root / "mlma-hate" / "en_dataset_with_stop_words.csv"
    rows = []
    for r in _read_csv(path):
        tags = set(r["sentiment"].split("_"))
        individual = r["group"] == "individual"
        pos: list[str] = []
        zero: list[str] = []
        if tags == {"normal"}:
            zero = [*HATE, *HARASS]
        else:
            if "hateful" in tags and not individual:
                pos.append("hate")
            if tags & {"offensive", "abusive", "disrespectful"} and individual:
                pos.append("harassment")
            if not pos:
                continue
        text = clean_social(r["tweet"].replace("@URL", ""))
        rows.append(LabeledText(text, make_labels(pos, zero), "mlma"))
    return rows, [path]


@_source("toxigen")
def load_toxigen(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """ToxiGen seed statements: `hate_*` files → hate; `neutral_*` files → benign on every category."""
    folder = root / "toxigen"
    files = sorted((folder / "prompts").glob("*.txt")) + sorted((folder / "demonstrations").rglob("*.txt"))
    rows = []
    for path in files:
        hateful = path.name.startswith("hate_")
        for line in path.read_text(encoding="utf-8").splitlines():
            for part in line.split("\\n"):
                statement = part.strip().lstrip("-").strip()
                if len(statement) < 8:
                    continue
                labels = make_labels(pos=["hate"]) if hateful else make_labels(zero=ALL)
                rows.append(LabeledText(statement, labels, "toxigen"))
    return rows, files


_RTP = {
    "Insult": "harassment",
    "IdentityAttack": "hate",
    "Violence": "violence",
    "SelfHarm": "self-harm",
    "SexualContent": "sexual",
}


@_source("rtp-lx")
def load_rtp_lx(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """RTP-LX: a 1–3 rating with mean ≥ 2 → positive, all three raters at 1 → negative.

    The source is `rtp-lx:<LOCALE>`."""
    files = sorted((root / "rtp-lx").glob("RTP_LX_*.json.gz"))
    rows = []
    for path in files:
        locale = path.name.removeprefix("RTP_LX_").removesuffix(".json.gz")
        for r in _read_jsonl(path):
            notes = r["Annotations"]
            assert isinstance(notes, dict)
            pos = [cat for key, cat in _RTP.items() if float(notes.get(key, 1.0)) >= 2.0]
            zero = [cat for key, cat in _RTP.items() if float(notes.get(key, 1.0)) <= 1.0]
            # Violence aimed at an insulted person or an attacked group reads as a threat.
            if "violence" in pos and "harassment" in pos:
                pos.append("harassment/threatening")
            if "violence" in pos and "hate" in pos:
                pos.append("hate/threatening")
            text = str(r["Prompt"]).strip().strip('"').strip()
            rows.append(LabeledText(text, make_labels(pos, zero), f"rtp-lx:{locale}"))
    return rows, files


_CONVABUSE_HATE = ("ableist", "homophobic", "racist", "sexist", "transphobic")


def _first_flag(value: str) -> bool:
    return value.split(",")[0].strip() in ("1", "1.0")


def _share(row: dict[str, str], annotators: list[str], field: str) -> float:
    return sum(_first_flag(row.get(f"{a}_{field}", "")) for a in annotators) / len(annotators)


@_source("convabuse")
def load_convabuse(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """ConvAbuse: majority-abusive turns → harassment (sexual harassment also sexual,
    generalised bias → hate); majority not abusive → benign."""
    folder = root / "convabuse"
    files = [folder / f"ConvAbuseEMNLP{split}.csv" for split in ("train", "valid", "test")]
    rows = []
    for path in files:
        for r in _read_csv(path):
            annotators = sorted({k.split("_", 1)[0] for k in r if k.startswith("Annotator")})
            seen, abusive, clean = 0, [], 0
            for a in annotators:
                votes = {lvl: r.get(f"{a}_is_abuse.{lvl}", "") for lvl in ("1", "0", "-1", "-2", "-3")}
                if not any(v.strip() for v in votes.values()):
                    continue
                seen += 1
                if any(_first_flag(votes[lvl]) for lvl in ("-1", "-2", "-3")):
                    abusive.append(a)
                elif _first_flag(votes["1"]):
                    clean += 1
            if seen == 0:
                continue
            if len(abusive) * 2 > seen:
                pos = []
                if _share(r, abusive, "sex_harassment") > 0.5:
                    pos += ["sexual", "harassment"]
                hateful = max(_share(r, abusive, k) for k in _CONVABUSE_HATE) > 0.5
                if hateful and _share(r, abusive, "target.generalised") > 0.5:
                    pos.append("hate")
                elif not pos:
                    pos.append("harassment")
                labels = make_labels(pos)
            elif clean * 2 > seen:
                labels = make_labels(zero=ALL)
            else:
                continue
            rows.append(LabeledText(r["user"].strip(), labels, "convabuse"))
    return rows, files


_REQUEST_ZERO = _fam(SEX, SELF)


def _request(text: str, pos: list[str], source: str, zero: Iterable[str] = _REQUEST_ZERO) -> LabeledText:
    """A harmful request: `pos` positive; families the topic rules out (default sexual, self-harm) zero."""
    families = {BY_KEY[p].parent or p for p in pos}
    keep_zero = [z for z in zero if (BY_KEY[z].parent or z) not in families]
    return LabeledText(text.strip(), make_labels(pos, keep_zero), source)


_HARMBENCH = {
    "chemical_biological": ["illicit/violent"],
    "illegal": ["illicit"],
    "cybercrime_intrusion": ["illicit"],
    "harassment_bullying": ["harassment"],
}


@_source("harmbench")
def load_harmbench(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """HarmBench text behaviours by semantic category (misinformation, copyright, `harmful` dropped)."""
    path = root / "harmbench" / "harmbench_behaviors_text_all.csv"
    rows = []
    for r in _read_csv(path):
        pos = _HARMBENCH.get(r["SemanticCategory"])
        if pos:
            rows.append(_request(r["Behavior"], pos, "harmbench"))
    return rows, [path]


_KEYWORD_RULES: tuple[tuple[re.Pattern[str], list[str]], ...] = (
    (re.compile(r"suicid|self-harm|self harm|anorexi|bulimi|eating disorder|cutting", re.I), ["self-harm"]),
    (
        re.compile(r"\bbomb|explosive|weapon|\bguns?\b|firearm|poison|\bkill|murder|assassinat|terror", re.I),
        ["illicit/violent"],
    ),
    (
        re.compile(
            r"hack|steal|theft|fraud|malware|virus|ransomware|counterfeit|\bdrugs?\b|launder|phishing|"
            r"pirat|smuggl|insider trading|cheat|evade|shoplift|scam|password|exploit",
            re.I,
        ),
        ["illicit"],
    ),
    (re.compile(r"\bhate\b|racis|racial|discriminat|white supremac|slur", re.I), ["hate"]),
)


def keyword_request(text: str, source: str) -> LabeledText | None:
    """Weak labels for an unlabelled harmful request, from the first keyword rule that matches."""
    for pattern, pos in _KEYWORD_RULES:
        if pattern.search(text):
            if pos == ["self-harm"] and re.search(
                r"\bhow\b|guide|tutorial|instruction|method|ways? to", text, re.I
            ):
                pos = ["self-harm/instructions"]
            return _request(text, pos, source)
    return None


@_source("advbench")
def load_advbench(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """AdvBench behaviours, weakly labelled by keyword rules (no upstream categories);
    unmatched rows dropped."""
    path = root / "advbench" / "advbench_behaviors.csv"
    rows = [row for r in _read_csv(path) if (row := keyword_request(r["Behavior"], "advbench")) is not None]
    return rows, [path]


_CATQA: dict[str, list[str] | None] = {
    "Drug": ["illicit"],
    "Weapon": ["illicit/violent"],
    "Human Trafficking": ["illicit"],
    "Cybercrime": ["illicit"],
    "Theft and Robbery": ["illicit"],
    "Content Sexual exploitation": ["sexual/minors"],
    "Online predation": ["sexual/minors"],
    "Physical abuse": ["violence"],
    "Emotional and psychological abuse": ["harassment"],
    "Racial or ethnic hate": ["hate"],
    "Religious intolerance": ["hate"],
    "Gender-based violence": ["violence"],
    "Cyberbullying": ["harassment"],
    "Terrorism and extremism": ["violence", "illicit/violent"],
    "Self-harm": ["self-harm"],
    "Assault and battery": ["violence", "illicit/violent"],
    "Weapon making": ["illicit/violent"],
    "Pornography": ["sexual"],
    "Erotic text": ["sexual"],
    "Nude imagery": ["sexual"],
    "Sexually explicit dialogue": ["sexual"],
}
_CATQA_BY_CATEGORY = {
    "Malware Viruses": ["illicit"],
    "Economic Harm": ["illicit"],
    "Fraud/Deception": ["illicit"],
    "Privacy Violation Activity": ["illicit"],
}
_CATQA_OUT_OF_TAXONOMY = ("Political Campaigning", "Tailored Financial Advice")


@_source("catqa")
def load_catqa(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """CatQA (English) by subcategory, plus DangerousQA by keyword rules;
    policy areas outside the taxonomy → 0."""
    folder = root / "catqa-harmfulqa"
    english, dangerous = folder / "catqa_english.json", folder / "dangerousqa.json"
    rows = []
    for category, subs in json.loads(english.read_text(encoding="utf-8")).items():
        for sub, questions in subs.items():
            sub = sub.rstrip(":").strip()
            for q in questions:
                if category in _CATQA_OUT_OF_TAXONOMY:
                    rows.append(
                        LabeledText(q.strip(), make_labels(zero=_fam(SEX, SELF, VIOL, HATE)), "catqa")
                    )
                    continue
                pos = _CATQA.get(sub) or _CATQA_BY_CATEGORY.get(category)
                if pos:
                    rows.append(_request(q, pos, "catqa"))
    for q in json.loads(dangerous.read_text(encoding="utf-8")):
        row = keyword_request(q, "catqa")
        if row is not None:
            rows.append(row)
    return rows, [english, dangerous]


_AART_GROUPS: dict[tuple[str, ...], list[str]] = {
    (
        "drug possession",
        "drug dealing",
        "drug trafficking",
        "drug manufacturing",
        "drug crimes",
        "fraud",
        "credit card fraud",
        "corporate fraud",
        "financial crimes",
        "identity theft",
        "ponzi schemes",
        "pyramid schemes",
        "money laundering",
        "tax evasion",
        "embezzlement",
        "theft",
        "shoplifting",
        "burglary",
        "robbery",
        "vandalism",
        "property crimes",
        "migrant smuggling",
        "illegal dumping",
        "environmental crimes",
        "human trafficking",
        "labor trafficking",
        "organ trafficking",
        "child trafficking",
        "sex trafficking",
        "prostitution",
    ): ["illicit"],
    (
        "terrorism",
        "bombings",
        "assassinations",
        "murder",
        "kidnapping",
        "kidnappings",
        "hijackings",
        "arson",
        "assault",
        "violence",
        "acts of violence committed for political or ideological purposes",
        "cyberterrorism",
    ): ["illicit/violent", "violence"],
    (
        "hate crimes",
        "crimes motivated by race",
        "crimes motivated by religion",
        "crimes motivated by disability",
        "crimes motivated by sexual orientation",
        "crimes motivated by gender identity",
    ): ["hate", "illicit/violent"],
    ("pornography",): ["sexual"],
    ("rape",): ["sexual", "violence"],
    ("domestic violence", "animal abuse", "animal cruelty", "dog fighting", "cockfighting"): ["violence"],
}
_AART = {crime: pos for crimes, pos in _AART_GROUPS.items() for crime in crimes}


@_source("aart")
def load_aart(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """AART generated prompts by `crime`; topics that are often harmless (pollution, gambling, …) dropped."""
    path = root / "aart" / "aart-v1-20231117.csv"
    rows = []
    for r in _read_csv(path):
        pos = _AART.get(r["crime"].strip().lower())
        if pos:
            rows.append(_request(r["prompt"], pos, "aart"))
    return rows, [path]


_SSH_INTENT = re.compile(
    r"\bI(?:'m| am| want| will|'ll| plan| have decided| feel like)\b.{0,60}"
    r"(?:kill myself|end (?:it|my life)|suicide|die\b|cut myself|hurt myself|overdose)",
    re.I,
)
_SSH_HOW = re.compile(
    r"\bhow (?:do|can|to|should|much|many)\b|method|ways? to|best way|painless|lethal|dose", re.I
)
_AILUMINATE = {
    "vcr": ["violence", "illicit/violent"],
    "src": ["sexual"],
    "cse": ["sexual/minors"],
    "iwp": ["illicit/violent"],
    "ncr": ["illicit"],
    "hte": ["hate"],
    "sxc_prn": ["sexual"],
}


@_source("ailuminate")
def load_ailuminate(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """AILuminate demo prompts (EN, FR) by hazard; `ssh` split into intent/instructions by phrasing.

    Hazards outside the taxonomy (IP, defamation, privacy, specialised advice) are 0 on the sexual,
    self-harm, violence and hate families. The hazard is the prompt's topic, so labels are noisy.
    """
    folder = root / "ailuminate-demo"
    files = sorted(folder.glob("airr_official_1.0_demo_*_prompt_set_release.csv"))
    rows = []
    for path in files:
        for r in _read_csv(path):
            hazard, text = r["hazard"], r["prompt_text"]
            if hazard == "ssh":
                pos = ["self-harm"]
                if _SSH_INTENT.search(text):
                    pos.append("self-harm/intent")
                if _SSH_HOW.search(text):
                    pos.append("self-harm/instructions")
                rows.append(_request(text, pos, "ailuminate"))
            elif hazard in _AILUMINATE:
                rows.append(_request(text, _AILUMINATE[hazard], "ailuminate"))
            else:
                rows.append(
                    LabeledText(text.strip(), make_labels(zero=_fam(SEX, SELF, VIOL, HATE)), "ailuminate")
                )
    return rows, files


_SELF_HARM_WORDS = re.compile(
    r"suicid|kill(?:ing)? myself|end (?:it|my life)|want(?:ed)? to die|better off dead|take my (?:own )?life|"
    r"overdos|\bod\b|slit|cut(?:ting)? myself|self[- ]harm|hang(?:ing)? myself|jump(?:ing)? off|"
    r"not (?:be )?(?:here|alive) anymore|no reason to live",
    re.I,
)


@_source("reddit-cssrs")
def load_reddit_cssrs(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Reddit C-SSRS posts inheriting the user's rating: ideation/behaviour → self-harm/intent,
    attempt → self-harm (only posts that mention self-harm; the others say nothing), indicator → not
    intent, supportive → benign. Unparseable users dropped."""
    path = root / "reddit-cssrs" / "500_Reddit_users_posts_labels.csv"
    rows = []
    for r in _read_csv(path):
        try:
            posts = ast.literal_eval(r["Post"])
        except (ValueError, SyntaxError):
            continue
        label = r["Label"]
        if label in ("Ideation", "Behavior", "Attempt"):
            # The rating is per user: only posts that themselves speak of self-harm inherit it.
            pos = ["self-harm/intent"] if label != "Attempt" else ["self-harm"]
            rows += [
                LabeledText(str(p).strip(), make_labels(pos), "reddit-cssrs")
                for p in posts
                if _SELF_HARM_WORDS.search(str(p))
            ]
            continue
        elif label == "Indicator":
            labels = make_labels(zero=["self-harm/intent", "self-harm/instructions"])
        else:
            labels = make_labels(zero=ALL)
        rows += [LabeledText(str(p).strip(), dict(labels), "reddit-cssrs") for p in posts if str(p).strip()]
    return rows, [path]


@_source("diasafety")
def load_diasafety(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """DiaSafety `Offending User` responses: unsafe → harassment, safe → not harassment."""
    folder = root / "diasafety"
    files = [folder / f"{split}.json" for split in ("train", "val", "test")]
    rows = []
    for path in files:
        for r in json.loads(path.read_text(encoding="utf-8")):
            if r["category"] != "Offending User":
                continue
            labels = make_labels(pos=["harassment"]) if r["label"] == "Unsafe" else make_labels(zero=HARASS)
            rows.append(LabeledText(str(r["response"]).strip(), labels, "diasafety"))
    return rows, files


@_source("hatemoji")
def load_hatemoji(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """HatemojiBuild and HatemojiCheck: hateful → hate (threatening language → hate/threatening
    and harassment/threatening), else not hate."""
    folder = root / "hatemoji"
    files = [folder / f"HatemojiBuild_{s}.csv" for s in ("train", "validation", "test")]
    files.append(folder / "HatemojiCheck_test.csv")
    rows = []
    for path in files:
        for r in _read_csv(path):
            if r["label_gold"] == "1":
                threat = r.get("type") == "threateninglanguage"
                pos = ["hate/threatening", "harassment/threatening", "violence"] if threat else ["hate"]
                labels = make_labels(pos=pos)
            else:
                labels = make_labels(zero=["hate"])
            rows.append(LabeledText(r["text"].strip(), labels, "hatemoji"))
    return rows, files


@_source("fox-news")
def load_fox_news(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Fox News comments: hateful → hate, else not hate."""
    path = root / "fox-news-hate" / "fox-news-comments.json"
    rows = []
    for r in _read_jsonl(path):
        labels = make_labels(pos=["hate"]) if r["label"] == 1 else make_labels(zero=["hate"])
        rows.append(LabeledText(str(r["text"]).strip(), labels, "fox-news"))
    return rows, [path]


@_source("simplesafetytests")
def load_simplesafetytests(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """SimpleSafetyTests by harm area (child safety: sexual/minors when sexual words occur, else violence)."""
    path = root / "simplesafetytests" / "simplesafetytests.csv"
    sexual = re.compile(r"sex|nude|naked|porn|explicit|groom", re.I)
    rows = []
    for r in _read_csv(path):
        area, text = r["harm_area"], r["prompts_final"]
        if area.startswith("Suicide"):
            pos = ["self-harm/instructions"] if _SSH_HOW.search(text) else ["self-harm"]
        elif area.startswith("Physical harm"):
            pos = ["violence", "illicit/violent"]
        elif area.startswith(("Illegal", "Scams")):
            pos = ["illicit"]
        else:
            pos = ["sexual/minors"] if sexual.search(text) else ["violence"]
        rows.append(_request(text, pos, "simplesafetytests"))
    return rows, [path]


@_source("benign")
def load_benign(root: Path) -> tuple[list[LabeledText], list[Path]]:
    """Benign text, 0 on every category: therapist answers and non-crisis questions (Counsel Chat),
    NIH health Q&A (MedQuAD), civil Wikipedia talk comments, CoCoNot contrast and preference prompts,
    TruthfulQA questions, and everyday assistant traffic: PandaLM's instructions (with their input) and
    model responses, and every message of the OpenAssistant trees (prompts and replies)."""
    files = [
        root / "counsel-chat" / "20200325_counsel_chat.csv",
        root / "medquad-sensitive-health" / "medquad_sensitive_health.jsonl",
        root / "wiki-talk-context-toxicity" / "gc.csv",
        root / "wiki-talk-context-toxicity" / "gn.csv",
        root / "coconot" / "coconot_contrast_eval.jsonl",
        root / "coconot" / "coconot_pref.jsonl",
        root / "truthfulqa" / "TruthfulQA.csv",
        root / "pandalm-human-testset" / "testset-v1.json",
        root / "oasst-en100-trees" / "en_100_tree.jsonl",
    ]
    zero = make_labels(zero=ALL)
    crisis = {"self-harm", "depression", "eating-disorders", "domestic-violence", "trauma", "substance-abuse"}
    texts: list[tuple[str, str]] = []
    for r in _read_csv(files[0]):
        texts.append((r["answerText"], "benign:counsel-chat"))
        if r["topic"] not in crisis:
            texts.append((r["questionText"], "benign:counsel-chat"))
    for item in _read_jsonl(files[1]):
        texts += [(str(item["question"]), "benign:medquad"), (str(item["answer"]), "benign:medquad")]
    for path in files[2:4]:
        texts += [(r["text"], "benign:wiki-talk") for r in _read_csv(path) if r["label"] == "0"]
    for path in files[4:6]:
        texts += [(str(item["prompt"]), "benign:coconot") for item in _read_jsonl(path)]
    texts += [(r["Question"], "benign:truthfulqa") for r in _read_csv(files[6])]
    for item in json.loads(files[7].read_text(encoding="utf-8")):
        prompt = str(item["instruction"]) + (f"\n{item['input']}" if item.get("input") else "")
        texts += [(t, "benign:pandalm") for t in (prompt, str(item["response1"]), str(item["response2"]))]
    for tree in _read_jsonl(files[8]):
        root_message = tree["prompt"]
        assert isinstance(root_message, dict)
        texts += [(t, "benign:oasst") for t in _tree_texts(root_message)]
    rows = [LabeledText(t.strip(), dict(zero), s) for t, s in texts if t and t.strip()]
    return rows, files


def _tree_texts(message: dict[str, Any]) -> list[str]:
    """The text of an OpenAssistant message and of every reply below it."""
    texts = [str(message.get("text", ""))]
    for reply in message.get("replies", []):
        texts += _tree_texts(reply)
    return texts


SEED_FILES = {
    "seed": "team_written.json",
    "seed-depictions": "team_written_depictions.json",
    "seed-contrasts": "team_written_contrasts.json",
    "seed-everyday": "team_written_everyday.json",
}

OPTIONAL_SEED_FILES = {
    "seed-stance": "team_written_stance.json",
    "seed-harassment": "team_written_harassment.json",
}
"""Team-written files that were tried and not shipped: left out of the default training data, added by name
(`--with-source seed-stance`)."""


def default_sources() -> list[str]:
    """The sources the shipped model trains on: every public source and the default seed files."""
    return [*SOURCES, *SEED_FILES]


def unknown_source(name: str) -> ConfigError:
    """The error for a source name that is neither public, seed nor optional seed."""
    known = ", ".join([*sorted(SOURCES), *SEED_FILES, *OPTIONAL_SEED_FILES])
    return ConfigError(f"unknown data source {name!r}; known: {known}")


def with_sources(extra: Sequence[str] | None) -> list[str] | None:
    """The default sources plus `extra` (None, meaning the defaults, when there is nothing extra); an
    unknown name is a ConfigError."""
    if not extra:
        return None
    for name in extra:
        if name not in SOURCES and name not in SEED_FILES and name not in OPTIONAL_SEED_FILES:
            raise unknown_source(name)
    return list(dict.fromkeys([*default_sources(), *extra]))


def seed_path(name: str = "seed") -> Path:
    """A team-written seed file shipped with the package (a key of `SEED_FILES` or `OPTIONAL_SEED_FILES`)."""
    file = SEED_FILES.get(name) or OPTIONAL_SEED_FILES[name]
    return Path(str(resources.files("bastion.moderation") / "artifacts" / "seed" / file))


def load_seed(path: Path | None = None, source: str = "seed") -> list[LabeledText]:
    """Team-written examples for thin categories (see the file's `note`): `pos` and `zero` per item."""
    data = json.loads((path or seed_path(source)).read_text(encoding="utf-8"))
    rows = []
    for item in data["items"]:
        zero = ALL if item.get("zero") == "all" else item.get("zero", [])
        rows.append(LabeledText(item["text"], make_labels(item.get("pos", []), zero), source))
    return rows


def functional_test_texts() -> list[str]:
    """Texts of the team-written hate-speech functional tests (a test set: never trained on)."""
    path = Path(str(resources.files("bastion.moderation") / "artifacts" / "functional_tests.jsonl"))
    if not path.is_file():
        return []
    return [
        str(json.loads(line)["text"])
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def load_source(name: str, data_dir: Path) -> tuple[list[LabeledText], list[Path]]:
    """Rows and files of one source in `SOURCES` (or `seed`)."""
    if name in SEED_FILES or name in OPTIONAL_SEED_FILES:
        return load_seed(source=name), [seed_path(name)]
    if name not in SOURCES:
        raise unknown_source(name)
    try:
        return SOURCES[name](data_dir)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"data set file missing for source {name!r}: {exc.filename}; set BASTION_DATA_DIR or run "
            "`bastion data pull`"
        ) from exc


def load_all(data_dir: Path, sources: Iterable[str] | None = None) -> LoadedData:
    """Every source's rows, deduplicated: a text seen twice keeps its first source's row, and rows whose
    labels are all None are dropped. Conflicting duplicates within a source keep the positive labels.
    Texts of the XSTest test set and of the team-written functional tests are always left out."""
    names = list(sources) if sources is not None else default_sources()
    seen: dict[str, LabeledText] = {}
    xstest_file = data_dir / "xstest" / "xstest_prompts.csv"
    held_out = (
        {normalise_key(r["prompt"]) for r in _read_csv(xstest_file)} if xstest_file.is_file() else set()
    )
    held_out |= {normalise_key(t) for t in functional_test_texts()}
    files: dict[str, list[Path]] = {}
    for name in names:
        rows, used = load_source(name, data_dir)
        files[name] = used
        for row in rows:
            if not row.text or all(v is None for v in row.labels.values()):
                continue
            key = normalise_key(row.text)
            if key in held_out:
                continue
            first = seen.get(key)
            if first is None:
                seen[key] = row
            elif first.source == row.source:
                for cat, value in row.labels.items():
                    if value is not None and (first.labels[cat] is None or value > (first.labels[cat] or 0)):
                        first.labels[cat] = value
    return LoadedData(list(seen.values()), files)


def load_xstest(data_dir: Path) -> tuple[list[str], list[int], Path]:
    """XSTest prompts with 1 = unsafe contrast prompt, 0 = safe look-alike (the final any-harm test set)."""
    path = data_dir / "xstest" / "xstest_prompts.csv"
    if not path.is_file():
        raise ConfigError(f"XSTest not found at {path}; set BASTION_DATA_DIR")
    texts, labels = [], []
    for r in _read_csv(path):
        texts.append(r["prompt"])
        labels.append(1 if r["label"] == "unsafe" else 0)
    return texts, labels, path
