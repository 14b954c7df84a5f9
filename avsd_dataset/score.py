"""Official DSTC7-AVSD scoring, offline, in Python 3: BLEU-1..4, METEOR, ROUGE-L and CIDEr.

Every AVSD paper reports the numbers of the official DSTC7-AVSD evaluation package
(`dstc7avsd_eval.sh`: Python 2 and a patched `coco-caption`). This module reproduces that package
with today's `pycocoevalcap`, digit for digit:

1. **Which turns are scored.** A result file is the test JSON (`test_set4DSTC7-AVSD.json`) with the
   answers filled in. Only the *last* turn of each dialogue is scored (`get_hypotheses.py -l`), in
   the order of the file: the i-th dialogue of the result file is paired with the reference image
   id `i + 1` of `test_set4DSTC7-AVSD_multiref.json` (COCO caption format, 6 references per turn,
   named `<image_id>_<turn index>`). The official package trusts that order blindly; here every pair
   is checked by name and a mismatch is an error (see [`match_results_to_references`]).
2. **Stopword filter, hypotheses only.** Each hypothesis is split on whitespace and every word that
   matches one of the anchored regular expressions `^<line>$` built from the official
   `data/stopwords.txt` is dropped. That file holds `,` and `.`; as a regular expression `.` matches
   *any* single character, so every one-character word goes ("a", "i", "2", ",", "?", ...). The
   official filter works on UTF-8 bytes (Python 2 `str`), so "one character" means one byte; this
   is reproduced ([`StopwordFilter`]). The references are not filtered.
3. **Tokenisation and scorers.** Hypotheses and references go through the Stanford `PTBTokenizer`
   (`-preserveLines -lowerCase`, punctuation tokens removed), then `Bleu(4)` (corpus BLEU, "closest"
   reference length), `Meteor()` (METEOR 1.5, `-l en -norm`), `Rouge()` (ROUGE-L, beta 1.2) and
   `Cider()` (CIDEr-D, sigma 6, document frequencies from the scored references). SPICE, which the
   unpatched `COCOEvalCap.evaluate()` also runs, is not part of the protocol (the DSTC7 patch removes
   it; it would also download CoreNLP).

There is no separate lower-casing step: the official pipeline lower-cases inside `PTBTokenizer`,
after the stopword filter, and so does this module. With the official stopword list the order does
not matter ("." and "," match regardless of case); AVSD text is lower-case anyway.

Two implementation choices make the call fast without changing any number: the PTB tokenizer runs
once over hypotheses and references together (it tokenises line by line, so this equals the two
calls of `COCOEvalCap`), and the METEOR JVM is started first so that it loads its paraphrase table
while the tokenizer, BLEU, ROUGE-L and CIDEr run. The one deliberate difference: characters that
the Java tokenizer reads as line breaks (`\\r`, `\\v`, `\\f`, U+2028, U+2029) are replaced by spaces,
as `pycocoevalcap` already does for `\\n`; the official package would shift every later sentence
by one line on such input. The DSTC7 files contain none of them.

Command:

```bash
python -m avsd_dataset.score RESULT_JSON REFERENCE_JSON [--output_json PATH] [--stopwords PATH]
```

METEOR and the PTB tokenizer need a Java runtime (`java` on `PATH`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union


logger = logging.getLogger(__name__)

# The official `data/stopwords.txt` of the DSTC7-AVSD evaluation package, one line per entry.
DEFAULT_STOPWORDS: Tuple[str, ...] = (",", ".")
# The metric names, in the order the official package prints them.
METRIC_NAMES: Tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
# The placeholder answer of the last turn in the official test file.
UNDISCLOSED_ANSWER = "__UNDISCLOSED__"

StopwordSpec = Union[str, "os.PathLike[str]", Sequence[str], None]

JAVA_INSTALL_HINT = (
    "METEOR and the PTB tokenizer of pycocoevalcap run in Java, but no `java` executable was found on "
    "PATH. Install a Java runtime (8 or newer), e.g. `sudo apt-get install default-jre-headless` "
    "(Debian/Ubuntu), `conda install -c conda-forge openjdk` (conda) or `brew install openjdk` (macOS), "
    "then check that `java -version` works in this shell."
)
# Characters that Stanford's PTBTokenizer treats as line breaks (besides "\n", which pycocoevalcap replaces).
_JAVA_LINE_BREAKS = re.compile("[\r\x0b\x0c\u2028\u2029]")


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


def filter_stopwords(text: str, stopwords: Union[str, "os.PathLike[str]", Sequence[str]] = DEFAULT_STOPWORDS) -> str:
    """Apply the official DSTC7-AVSD hypothesis stopword filter to `text` (see [`StopwordFilter`]).

    Example:

    ```python
    >>> filter_stopwords("yes , i think a man is there .")
    'yes think man is there'
    ```
    """
    return StopwordFilter(stopwords)(text)


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


def _load_json(path_or_data: Union[str, "os.PathLike[str]", Mapping[str, Any]], what: str) -> Mapping[str, Any]:
    if isinstance(path_or_data, Mapping):
        return path_or_data
    with open(path_or_data, encoding="utf-8") as json_file:
        try:
            return json.load(json_file)
        except json.JSONDecodeError as error:
            raise ValueError(f"The {what} {os.fspath(path_or_data)!r} is not valid JSON: {error}") from error
        except UnicodeDecodeError as error:
            raise ValueError(
                f"The {what} {os.fspath(path_or_data)!r} is not UTF-8 text (byte {error.object[error.start:error.start + 1]!r} "
                f"at offset {error.start}); save it as UTF-8 JSON"
            ) from error


def load_dstc7_results(result_json: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Read the scored turns of an official-format DSTC7-AVSD result file: the last turn of each dialogue.

    Args:
        result_json (`str`, `os.PathLike` or `dict`):
            Path to the result file (the test JSON with the answers filled in, as written by
            `run_vgd.py --do_predict`), or its parsed content.

    Returns:
        `List[dict]`: one entry per dialogue, in file order, with `id` (`"<image_id>_<turn>"`), `image_id`,
        `turn` (0-based index of the last turn) and `answer`.

    An empty answer (what `run_vgd.py` writes when the model generates nothing) is kept: it is scored as an
    empty hypothesis, as the official package does.

    Raises:
        ValueError: for a file that is not in the official format, or a scored answer that is missing or
            still `__UNDISCLOSED__`.
    """
    data = _load_json(result_json, "result file")
    dialogs = data.get("dialogs") if isinstance(data, Mapping) else None
    if not isinstance(dialogs, list):
        raise ValueError(
            "Not an official-format result file: expected a JSON object with a 'dialogs' list "
            "(the test JSON with the answers filled in)."
        )
    turns = []
    for index, dialog in enumerate(dialogs):
        image_id = dialog.get("image_id") if isinstance(dialog, Mapping) else None
        qa_turns = dialog.get("dialog") if isinstance(dialog, Mapping) else None
        if image_id is None or not isinstance(qa_turns, list) or len(qa_turns) == 0:
            raise ValueError(f"Dialogue {index} of the result file has no 'image_id' or no 'dialog' turns.")
        turn = len(qa_turns) - 1
        turn_id = f"{image_id}_{turn}"
        last_turn = qa_turns[-1]
        answer = last_turn.get("answer") if isinstance(last_turn, Mapping) else None
        if not isinstance(answer, str):
            raise ValueError(f"Dialogue {index} ({turn_id}) of the result file has no answer string in its last turn.")
        if answer.strip() == UNDISCLOSED_ANSWER:
            raise ValueError(
                f"Dialogue {index} ({turn_id}) of the result file still has the answer {UNDISCLOSED_ANSWER!r}: "
                "fill in the generated answers of the last turns (e.g. with `run_vgd.py --do_predict`) before scoring."
            )
        turns.append({"id": turn_id, "image_id": str(image_id), "turn": turn, "answer": answer})
    return turns


def load_references(reference_json: Union[str, "os.PathLike[str]", Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Read a multi-reference file in COCO caption format (e.g. `test_set4DSTC7-AVSD_multiref.json`).

    Args:
        reference_json (`str`, `os.PathLike` or `dict`):
            Path to the file, or its parsed content: `images` (`{"id", "name"}` with names
            `<image_id>_<turn>`) and `annotations` (`{"image_id", "caption"}`).

    Returns:
        `List[dict]`: one entry per image, sorted by numeric image id (the order the official package
        pairs with the result file), with `id` (the image name) and `references` (the captions, in
        file order).

    Raises:
        ValueError: for a file that is not in that format or an image without references.
    """
    data = _load_json(reference_json, "reference file")
    images = data.get("images") if isinstance(data, Mapping) else None
    annotations = data.get("annotations") if isinstance(data, Mapping) else None
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError("Not a COCO-format reference file: expected a JSON object with 'images' and 'annotations' lists.")
    where = "the reference file" if isinstance(reference_json, Mapping) else f"the reference file {os.fspath(reference_json)!r}"
    for index, image in enumerate(images):
        if not isinstance(image, Mapping) or "id" not in image or not isinstance(image.get("name"), str):
            raise ValueError(f"Image {index} of {where} needs an 'id' and a 'name' string (\"<image_id>_<turn>\"), got {image!r}.")
    captions_by_image: Dict[Any, List[str]] = {image["id"]: [] for image in images}
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, Mapping) or "image_id" not in annotation:
            raise ValueError(f"Annotation {index} of {where} has no 'image_id': {annotation!r}.")
        if not isinstance(annotation.get("caption"), str):
            raise ValueError(
                f"Annotation {index} of {where} (image_id {annotation['image_id']!r}) needs a 'caption' string, "
                f"got {annotation!r}."
            )
        if annotation["image_id"] not in captions_by_image:
            raise ValueError(f"Reference annotation {annotation!r} points to an image id absent from 'images'.")
        captions_by_image[annotation["image_id"]].append(annotation["caption"])
    references = []
    for image in sorted(images, key=lambda image: image["id"]):
        if not captions_by_image[image["id"]]:
            raise ValueError(f"Reference image {image['name']!r} (id {image['id']}) has no reference captions.")
        references.append({"id": image["name"], "references": captions_by_image[image["id"]]})
    return references


def match_results_to_references(
    results: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]
) -> None:
    """Check that the i-th scored turn of the result file is the i-th reference turn, for every i.

    The official package pairs them by position only; a file with dialogues missing, reordered or
    truncated would silently be scored against the wrong references. This raises instead.

    Raises:
        ValueError: naming the first index where the names differ and both names, or the two counts.
    """
    first_mismatch = next(
        (index for index, (result, reference) in enumerate(zip(results, references)) if result["id"] != reference["id"]),
        None,
    )
    if first_mismatch is not None:
        result, reference = results[first_mismatch], references[first_mismatch]
        raise ValueError(
            f"Dialogue {first_mismatch} of the result file does not match reference {first_mismatch}: the result's "
            f"last turn is {result['id']!r} (image_id {result['image_id']!r}, turn {result['turn']}) but the "
            f"reference is {reference['id']!r}. The result file must hold every dialogue of the test file, in the "
            "same order, with all of its turns (only the last one is scored)."
        )
    if len(results) != len(references):
        shorter = min(len(results), len(references))
        raise ValueError(
            f"The result file has {len(results)} dialogues but the reference file has {len(references)} scored "
            f"turns (the first {shorter} match; the difference starts at index {shorter}). The result file must "
            "hold every dialogue of the test file, in the same order."
        )


def prepare_dstc7_inputs(
    result_json: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    reference_json: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    stopwords: StopwordSpec = DEFAULT_STOPWORDS,
) -> Tuple[List[str], List[List[str]]]:
    """Build the scorer inputs of the official protocol from a result file, without scoring them.

    Reads the last turn of each dialogue (file order), checks it against the references by name, and
    applies the stopword filter to the hypotheses.

    Args:
        result_json: the result file (path or parsed content), see [`load_dstc7_results`].
        reference_json: the multi-reference file (path or parsed content), see [`load_references`].
        stopwords (*optional*, defaults to the official list `,` and `.`):
            A stopword file path or its lines; `None` (or an empty list) disables the filter (the
            numbers are then not the official ones).

    Returns:
        `Tuple[List[str], List[List[str]]]`: the filtered hypotheses and their references.
    """
    results = load_dstc7_results(result_json)
    references = load_references(reference_json)
    match_results_to_references(results, references)
    hypotheses = [result["answer"] for result in results]
    if stopwords is not None:
        stopword_filter = StopwordFilter(stopwords)
        hypotheses = [stopword_filter(hypothesis) for hypothesis in hypotheses]
    num_empty = sum(1 for result in results if result["answer"].strip() == "")
    num_emptied = sum(1 for hypothesis in hypotheses if hypothesis.strip() == "") - num_empty
    if num_empty or num_emptied:
        logger.warning(
            f"{num_empty} answers of the result file are empty and {num_emptied} more are empty after the stopword "
            "filter; they are scored as empty, as the official package does."
        )
    return hypotheses, [reference["references"] for reference in references]


def score_result_file(
    result_json: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    reference_json: Union[str, "os.PathLike[str]", Mapping[str, Any]],
    stopwords: StopwordSpec = DEFAULT_STOPWORDS,
) -> Dict[str, float]:
    """Score an official-format result file exactly as the official DSTC7-AVSD package does.

    Args:
        result_json: path to the result file (the test JSON with the answers filled in), or its content.
        reference_json: path to `test_set4DSTC7-AVSD_multiref.json` (or another file in that format), or its content.
        stopwords: see [`prepare_dstc7_inputs`]; the default is the official list.

    Returns:
        `Dict[str, float]`: `Bleu_1`, `Bleu_2`, `Bleu_3`, `Bleu_4`, `METEOR`, `ROUGE_L`, `CIDEr`, unrounded.
    """
    logger.info("Reading the result and reference files.")
    hypotheses, references = prepare_dstc7_inputs(result_json, reference_json, stopwords=stopwords)
    return compute_caption_metrics(hypotheses, references)


def format_scores(scores: Mapping[str, float]) -> str:
    """Format the scores like the summary of the official `dstc7avsd_eval.sh` (`name: value`, 3 decimals)."""
    lines = ["--- summary ---"]
    lines += [f"{name}: {scores[name]:.3f}" for name in METRIC_NAMES]
    lines.append("---------------")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `python -m avsd_dataset.score`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m avsd_dataset.score",
        description=(
            "Score an official-format DSTC7-AVSD result file the way the official DSTC7 evaluation package "
            "does: last turn of each dialogue, in file order, against the multi-reference file; hypotheses "
            "pass the official stopword filter (every one-character word is removed); PTB tokenization, "
            "BLEU-1..4, METEOR, ROUGE-L, CIDEr. Needs Java."
        ),
    )
    parser.add_argument("result_json", help="result file: the test JSON with the answers of the last turns filled in")
    parser.add_argument("reference_json", help="multi-reference file, e.g. test_set4DSTC7-AVSD_multiref.json")
    parser.add_argument("--output_json", default=None, help="also write the seven metrics, unrounded, to this JSON file")
    parser.add_argument(
        "--stopwords",
        default=None,
        help="stopword file in the official format (default: the official list, ',' and '.', built in)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)

    stopwords: StopwordSpec = args.stopwords if args.stopwords is not None else DEFAULT_STOPWORDS
    try:
        scores = score_result_file(args.result_json, args.reference_json, stopwords=stopwords)
    except (ValueError, OSError, RuntimeError) as error:  # RuntimeError includes JavaNotFoundError
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_scores(scores))
    if args.output_json is not None:
        try:
            output_dir = os.path.dirname(os.path.abspath(args.output_json))
            os.makedirs(output_dir, exist_ok=True)
            with open(args.output_json, "w", encoding="utf-8") as output_file:
                json.dump(scores, output_file, indent=2)
                output_file.write("\n")
        except OSError as error:
            print(
                f"error: cannot write the scores to --output_json {args.output_json!r} ({error.strerror or error}); "
                "the scores are printed above",
                file=sys.stderr,
            )
            return 1
        logger.info(f"Wrote the scores to {args.output_json}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
