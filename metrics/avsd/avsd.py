"""AVSD (DSTC7) answer-generation metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr, offline.

This file is self-contained (it imports nothing from the VGD-GPT2 repository), so `evaluate.load`
works from any working directory and on a copy of this folder. The scoring core below is a verbatim
copy of `avsd_dataset/score.py` in the repository; a test keeps the two identical.
"""

import os
import re
import shutil
import time
from typing import Any, Dict, List, Sequence, Tuple, Union

import datasets
import evaluate

# Imported so that `evaluate.load` checks that pycocoevalcap is installed; the scorers are imported below.
import pycocoevalcap


logger = evaluate.logging.get_logger(__name__)

_CITATION = """\
@inproceedings{alamri2019audio,
  title={Audio Visual Scene-Aware Dialog},
  author={Alamri, Huda and Cartillier, Vincent and Das, Abhishek and Wang, Jue and Cherian, Anoop and Essa, Irfan and Batra, Dhruv and Marks, Tim K. and Hori, Chiori and Anderson, Peter and Lee, Stefan and Parikh, Devi},
  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2019}
}
@article{chen2015microsoft,
  title={Microsoft {COCO} Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_DESCRIPTION = """\
The answer-generation metrics of the Audio Visual Scene-aware Dialog (AVSD) track of DSTC7, as
computed by the official DSTC7-AVSD evaluation package: BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D)
from pycocoevalcap (the MS-COCO caption evaluation code), against one or more references per
hypothesis. Hypotheses and references are tokenised by the Stanford PTB tokenizer (lower-cased,
punctuation removed). SPICE is not computed (it is not part of the AVSD protocol and needs a download).

The official protocol (`official_protocol=True`, or the configuration `"dstc7"`) also applies the
official hypothesis stopword filter: each hypothesis word matching `^,$` or `^.$` as a regular
expression is removed, i.e. EVERY one-character word ("a", "i", "2", "?", ...; one UTF-8 byte,
like the official Python 2 code). References are not filtered. For published-table numbers, pass
the answers of the last turn of each dialogue of the test set, in the order of
`test_set4DSTC7-AVSD.json`, with the 6 references of that turn from
`test_set4DSTC7-AVSD_multiref.json`; `python -m avsd_dataset.score RESULT_JSON REFERENCE_JSON`
in the VGD-GPT2 repository does that from a result file and checks the ordering.

CIDEr and BLEU are corpus-level: score the whole test set in one call. METEOR and the PTB
tokenizer need a Java runtime (`java` on PATH); one call takes about 7 s for the 1,710-turn test set,
most of it the METEOR JVM start.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`):
        One generated answer per example.
    references (`list` of `list` of `str`, or `list` of `str`):
        The reference answers of each example (one or more each).
    official_protocol (`bool`, *optional*):
        Apply the official DSTC7-AVSD stopword filter to the predictions first. Defaults to `False`
        for the `"default"` configuration and to `True` for the `"dstc7"` configuration.
    stopwords (`str` or `list` of `str`, *optional*):
        Only with `official_protocol`: a stopword file in the official format (one regular
        expression per line, optionally followed by a replacement), or its lines, instead of the
        official list (`,` and `.`).

Returns:
    `dict` with the float scores `Bleu_1`, `Bleu_2`, `Bleu_3`, `Bleu_4`, `METEOR`, `ROUGE_L`, `CIDEr`
    (CIDEr is not bounded by 1).

Examples:

    >>> avsd = evaluate.load("path/to/metrics/avsd")  # offline: a local folder
    >>> results = avsd.compute(
    ...     predictions=["yes , a man is sitting on the couch ."],
    ...     references=[["there is a man sitting on a couch .", "yes , one man on the couch"]],
    ...     official_protocol=True,
    ... )
    >>> sorted(results)
    ['Bleu_1', 'Bleu_2', 'Bleu_3', 'Bleu_4', 'CIDEr', 'METEOR', 'ROUGE_L']
"""

# The official `data/stopwords.txt` of the DSTC7-AVSD evaluation package, one line per entry.
DEFAULT_STOPWORDS: Tuple[str, ...] = (",", ".")
# The metric names, in the order the official package prints them.
METRIC_NAMES: Tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

JAVA_INSTALL_HINT = (
    "METEOR and the PTB tokenizer of pycocoevalcap run in Java, but no `java` executable was found on "
    "PATH. Install a Java runtime (8 or newer), e.g. `sudo apt-get install default-jre-headless` "
    "(Debian/Ubuntu), `conda install -c conda-forge openjdk` (conda) or `brew install openjdk` (macOS), "
    "then check that `java -version` works in this shell."
)
# Characters that Stanford's PTBTokenizer treats as line breaks (besides "\n", which pycocoevalcap replaces).
_JAVA_LINE_BREAKS = re.compile("[\r\x0b\x0c\u2028\u2029]")


# ----------------------------------------------------------------------------------------------
# Scoring core: verbatim copy of avsd_dataset/score.py (tests/test_scoring.py checks they match).
# ----------------------------------------------------------------------------------------------


class JavaNotFoundError(RuntimeError):
    """Raised when no Java runtime is available for METEOR and the PTB tokenizer."""


def check_java() -> str:
    """Return the path of the `java` executable, or raise [`JavaNotFoundError`] saying how to install one."""
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(JAVA_INSTALL_HINT)
    return java


class StopwordFilter:
    """The hypothesis stopword filter of the official DSTC7-AVSD evaluation package.

    Each stopword entry is one line of the official `stopwords.txt` format: a regular expression,
    optionally followed by a replacement (`PATTERN [REPLACEMENT]`); other lines are ignored. Each
    pattern is compiled as `^PATTERN$`. A text is split on whitespace; each word is replaced by the
    substitution of the first pattern that changes it, and words that end up empty are dropped. The
    words are joined with single spaces.

    Like the official Python 2 code, matching happens on the UTF-8 bytes of the text: with the
    official list (`,` and `.`) every word of exactly one byte is removed ("a", "i", "2", "?", ...),
    while a one-letter word such as "é" (two bytes) is kept.

    Args:
        stopwords (`str`, `os.PathLike` or sequence of `str`, *optional*, defaults to `DEFAULT_STOPWORDS`):
            A path to a stopword file, or its lines. The default is the official list, `,` and `.`.
    """

    def __init__(self, stopwords: Union[str, "os.PathLike[str]", Sequence[str]] = DEFAULT_STOPWORDS):
        if isinstance(stopwords, (str, os.PathLike)):
            with open(stopwords, "rb") as stopword_file:
                lines = stopword_file.read().split(b"\n")
        else:
            lines = [line.encode("utf-8") if isinstance(line, str) else bytes(line) for line in stopwords]
        self.patterns: List[Tuple["re.Pattern[bytes]", bytes]] = []
        for line in lines:
            fields = line.split()
            if len(fields) == 1:
                self.patterns.append((re.compile(b"^" + fields[0] + b"$"), b""))
            elif len(fields) == 2:
                self.patterns.append((re.compile(b"^" + fields[0] + b"$"), fields[1]))

    def filter_words(self, words: Sequence[bytes]) -> List[bytes]:
        """Apply the filter to words given as UTF-8 bytes; returns the kept (or replaced) words."""
        kept = []
        for word in words:
            target = word
            for pattern, replacement in self.patterns:
                substituted = pattern.sub(replacement, word)
                if substituted != word:
                    target = substituted
                    break
            if target != b"":
                kept.append(target)
        return kept

    def __call__(self, text: str) -> str:
        """Filter one text; returns the kept words joined by single spaces."""
        return b" ".join(self.filter_words(text.encode("utf-8").split())).decode("utf-8")


def _to_reference_lists(predictions: Sequence[str], references: Sequence[Any]) -> List[List[str]]:
    """Validate the scorer inputs and return the references as lists of strings."""
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} reference lists: "
            "each prediction needs its own list of references."
        )
    if len(predictions) == 0:
        raise ValueError("Nothing to score: `predictions` is empty.")
    reference_lists = []
    for index, (prediction, refs) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str):
            raise TypeError(f"Prediction {index} is a {type(prediction).__name__}, not a string.")
        refs = [refs] if isinstance(refs, str) else list(refs)
        if len(refs) == 0 or not all(isinstance(ref, str) for ref in refs):
            raise ValueError(f"Prediction {index} needs a non-empty list of reference strings, got {refs!r}.")
        reference_lists.append(refs)
    return reference_lists


def _close_meteor(meteor: Any) -> str:
    """Stop the METEOR JVM now (instead of at garbage collection) and return what it wrote on stderr."""
    if meteor.lock.locked():  # `compute_score` raised while holding the lock; `Meteor.__del__` would block.
        meteor.lock.release()
    process = meteor.meteor_p
    stderr = ""
    with meteor.lock:
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        process.kill()
        process.wait()
        try:
            stderr = process.stderr.read().decode("utf-8", errors="replace")
            process.stderr.close()
        except (OSError, ValueError):
            pass
    return stderr


def compute_caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Compute BLEU-1..4, METEOR, ROUGE-L and CIDEr with pycocoevalcap's scorers, as `COCOEvalCap` does.

    The inputs are used as given (apply [`StopwordFilter`] first for the official DSTC7 protocol). Both
    sides go through `PTBTokenizer` (which lower-cases and removes punctuation tokens) in one Java
    call; the METEOR JVM starts once, first, and loads while the other scorers run. Corpus-level
    scores depend on the whole set (BLEU's brevity penalty, CIDEr's document frequencies): score a
    full test set in one call rather than averaging calls.

    Args:
        predictions (`Sequence[str]`):
            One hypothesis per example (may be empty).
        references (`Sequence[Sequence[str]]`):
            For each prediction, one or more reference strings (a single string counts as one reference).

    Returns:
        `Dict[str, float]`: the keys `Bleu_1`, `Bleu_2`, `Bleu_3`, `Bleu_4`, `METEOR`, `ROUGE_L`, `CIDEr`.

    Raises:
        JavaNotFoundError: when `java` is not on `PATH`.
        ValueError: when the inputs do not line up.
    """
    predictions = list(predictions)
    reference_lists = _to_reference_lists(predictions, references)
    check_java()
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as error:
        raise ImportError("AVSD scoring needs pycocoevalcap: `pip install pycocoevalcap`.") from error

    num_examples = len(predictions)
    start = time.perf_counter()
    logger.info("Starting the METEOR JVM (it loads its paraphrase table in the background).")
    meteor = Meteor()
    meteor_failed = False
    try:
        captions: Dict[Tuple[str, int], List[Dict[str, str]]] = {}
        for index, prediction in enumerate(predictions):
            captions[("hypothesis", index)] = [{"caption": _JAVA_LINE_BREAKS.sub(" ", prediction)}]
        for index, refs in enumerate(reference_lists):
            captions[("reference", index)] = [{"caption": _JAVA_LINE_BREAKS.sub(" ", ref)} for ref in refs]
        num_references = sum(len(refs) for refs in reference_lists)
        logger.info(
            f"PTB tokenization (Java) of {num_examples} hypotheses and {num_references} references in one call."
        )
        tokenized = PTBTokenizer().tokenize(captions)
        if len(tokenized) != len(captions) or any(len(tokenized[key]) != len(captions[key]) for key in captions):
            raise RuntimeError(
                "The PTB tokenizer (Java, stanford-corenlp-3.4.1.jar inside pycocoevalcap) returned fewer "
                "sentences than it was given; see its error messages above."
            )
        res = {index: tokenized[("hypothesis", index)] for index in range(num_examples)}
        gts = {index: tokenized[("reference", index)] for index in range(num_examples)}

        scores: Dict[str, float] = {}
        logger.info("Computing BLEU-1..4.")
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for order, value in enumerate(bleu, start=1):
            scores[f"Bleu_{order}"] = float(value)
        logger.info("Computing ROUGE-L.")
        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
        logger.info("Computing CIDEr.")
        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        logger.info("Computing METEOR (Java).")
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        except (ValueError, OSError) as error:
            meteor_failed = True
            raise RuntimeError(f"METEOR (Java, meteor-1.5.jar) failed: {error}") from error
    finally:
        meteor_stderr = _close_meteor(meteor)
        if meteor_failed and meteor_stderr.strip():
            logger.error(f"METEOR's Java error output:\n{meteor_stderr.strip()}")
    logger.info(f"Scored {num_examples} examples in {time.perf_counter() - start:.1f} s.")
    return {name: scores[name] for name in METRIC_NAMES}


# ----------------------------------------------------------------------------------------------
# The evaluate module.
# ----------------------------------------------------------------------------------------------

_CONFIG_NAMES = ("default", "dstc7")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AVSD(evaluate.Metric):
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr as in the official DSTC7-AVSD evaluation, offline.

    Configurations: `"default"` scores the predictions as given; `"dstc7"` applies the official
    hypothesis stopword filter by default (the `official_protocol` argument overrides either).
    """

    def _info(self):
        if self.config_name not in _CONFIG_NAMES:
            raise ValueError(f"Unknown configuration {self.config_name!r} of the AVSD metric; choose one of {_CONFIG_NAMES}.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/salaniz/pycocoevalcap", "https://github.com/tylin/coco-caption"],
            reference_urls=["https://github.com/hudaAlamri/DSTC7-Audio-Visual-Scene-Aware-Dialog-AVSD-Challenge"],
        )

    def _compute(
        self,
        predictions: List[str],
        references: List[Union[str, List[str]]],
        official_protocol: Union[bool, None] = None,
        stopwords: Union[str, "os.PathLike[str]", Sequence[str], None] = None,
    ) -> Dict[str, float]:
        if official_protocol is None:
            official_protocol = self.config_name == "dstc7"
        if official_protocol:
            stopword_filter = StopwordFilter(DEFAULT_STOPWORDS if stopwords is None else stopwords)
            predictions = [stopword_filter(prediction) for prediction in predictions]
        elif stopwords is not None:
            raise ValueError("`stopwords` only applies with `official_protocol=True` (or the 'dstc7' configuration).")
        return compute_caption_metrics(predictions, references)
