# Copyright 2020 The VGD-GPT2 Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Memory-mapped access to the pre-extracted AVSD video / audio features.

The DSTC7 AVSD features are distributed as one `.npy` file per video and per feature type ("stream"):

```
<feature_root>/i3d_rgb/<image_id>.npy            # [T, 2048]   train and validation videos
<feature_root>/i3d_flow/<image_id>.npy           # [T, 2048]
<feature_root>/vggish/<image_id>.npy             # [T', 128]
<feature_root>/i3d_rgb_testset/<image_id>.npy    # the test videos live in `<stream>_testset/`
...
```

Spatio-temporal features (e.g. the paper's ResNeXt features) are `[F, P, D]` arrays and are handled the same
way. [`VideoFeatureStore`] reads them lazily with `np.load(mmap_mode="r")` and never substitutes zeros for a
missing file: a missing or unreadable file is an error (or, on request, a counted and logged `None`).
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Iterable, NamedTuple, Optional, Sequence, Union

import numpy as np


logger = logging.getLogger(__name__)

DEFAULT_FEATURE_STREAMS = ("i3d_rgb", "i3d_flow", "vggish")
TEST_DIR_SUFFIX = "_testset"

# Kinds of problems reported by `VideoFeatureStore.check`.
MISSING = "missing"
UNREADABLE = "unreadable"
BAD_SHAPE = "bad_shape"
DIM_MISMATCH = "dim_mismatch"
INVALID_ID = "invalid_id"
BAD_VALUES = "bad_values"


class VideoFeatureError(Exception):
    """Base class of the errors raised by [`VideoFeatureStore`]."""


class MissingVideoFeatureError(VideoFeatureError, FileNotFoundError):
    """A feature file of a video does not exist.

    Attributes:
        image_id (`str`): the video id.
        stream (`str`): the feature stream (e.g. `"i3d_rgb"`).
        path (`str`): the path that was tried.
    """

    def __init__(self, image_id: str, stream: str, path: str):
        super().__init__(
            f"No '{stream}' features for video '{image_id}': file not found: {path}"
        )
        self.image_id = image_id
        self.stream = stream
        self.path = path


class UnreadableVideoFeatureError(VideoFeatureError, ValueError):
    """A feature file exists but cannot be used (not a `.npy` array, truncated, wrong number of dimensions, ...).

    Attributes:
        image_id (`str`): the video id.
        stream (`str`): the feature stream (e.g. `"i3d_rgb"`).
        path (`str`): the path that was tried.
        reason (`str`): what is wrong with the file.
    """

    def __init__(self, image_id: str, stream: str, path: str, reason: str):
        super().__init__(f"Cannot read the '{stream}' features of video '{image_id}' from {path}: {reason}")
        self.image_id = image_id
        self.stream = stream
        self.path = path
        self.reason = reason


class FeatureProblem(NamedTuple):
    """One problem found by [`VideoFeatureStore.check`]."""

    image_id: str
    stream: str
    path: str
    kind: str  # one of "missing", "unreadable", "bad_shape", "bad_values", "dim_mismatch", "invalid_id"
    message: str

    def __str__(self) -> str:
        return f"{self.image_id} [{self.stream}] {self.kind}: {self.message} ({self.path})"


class VideoFeatureValidationError(VideoFeatureError, ValueError):
    """Raised by [`VideoFeatureStore.validate`]; lists every problem found (the first `max_listed` in the message).

    Attributes:
        problems (`list[FeatureProblem]`): all the problems found.
    """

    def __init__(self, problems: Sequence[FeatureProblem], num_videos: int, feature_root: str, max_listed: int = 20):
        problems = list(problems)
        num_bad_videos = len({problem.image_id for problem in problems})
        counts = collections.Counter(problem.kind for problem in problems)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
        lines = [
            f"{len(problems)} feature problem(s) ({summary}) in {num_bad_videos} of {num_videos} video(s) "
            f"under {feature_root}:"
        ]
        lines.extend(f"  - {problem}" for problem in problems[:max_listed])
        if len(problems) > max_listed:
            lines.append(f"  ... and {len(problems) - max_listed} more (see the `problems` attribute of this error).")
        super().__init__("\n".join(lines))
        self.problems = problems


def parse_feature_streams(streams: Union[str, Iterable[str]]) -> tuple[str, ...]:
    """Normalise a list of feature streams, or a comma-separated string, to a tuple of stream names.

    Example: `parse_feature_streams("i3d_rgb, vggish") == ("i3d_rgb", "vggish")`.
    """
    if isinstance(streams, str):
        names = [name.strip() for name in streams.split(",")]
    else:
        names = [str(name).strip() for name in streams]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"At least one feature stream is required, got {streams!r}.")
    duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"Feature streams must be unique, got {duplicates} more than once in {streams!r}.")
    for name in names:
        if os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
            raise ValueError(f"A feature stream is a directory name, not a path: got {name!r}.")
    return tuple(names)


def read_npy_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read the shape and dtype of a `.npy` file from its header only, without reading (or mapping) the array.

    Also checks that the file is long enough to hold the array (a truncated download fails here).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid, complete `.npy` array file.
    """
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                # Version 3.0 headers (utf-8 field names) have no public reader: let numpy parse it.
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                return tuple(array.shape), array.dtype
        except ValueError as error:
            raise ValueError(f"not a valid .npy file ({error})") from None
        data_offset = handle.tell()
        file_size = os.fstat(handle.fileno()).st_size
    if dtype.hasobject:
        raise ValueError(f"holds Python objects (dtype {dtype}), not numbers")
    expected_size = data_offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if file_size < expected_size:
        raise ValueError(
            f"truncated file: the header announces shape {tuple(shape)} {dtype} ({expected_size} bytes) "
            f"but the file has {file_size} bytes"
        )
    return tuple(shape), dtype


def _shape_problem(shape: tuple[int, ...]) -> Optional[str]:
    """Why a feature array of this shape cannot be used, or `None` when it can."""
    if len(shape) not in (2, 3):
        return f"expected a [frames, dim] or [frames, regions, dim] array, got shape {shape}"
    if 0 in shape:
        return f"empty feature array (shape {shape})"
    return None


def _dtype_problem(dtype: np.dtype) -> Optional[str]:
    """Why features of this dtype cannot be used (anything but floating point: str, bool, complex, int), or `None`."""
    if dtype.kind != "f":
        return f"expected floating-point features, got dtype {dtype}"
    return None


def _values_problem(array: np.ndarray, chunk_rows: int = 4096) -> Optional[str]:
    """Why the values of a (memory-mapped) float feature array cannot be used (NaN or infinite), or `None`.
    Reads the array once, `chunk_rows` frames at a time."""
    count, first_frame = 0, None
    for start in range(0, array.shape[0], chunk_rows):
        finite = np.isfinite(array[start : start + chunk_rows])
        if not finite.all():
            count += int(finite.size - np.count_nonzero(finite))
            if first_frame is None:
                first_frame = start + int(np.argwhere(~finite)[0][0])
    if count:
        return f"{count} non-finite values (NaN or inf), the first in frame {first_frame}"
    return None


class VideoFeatureStore:
    """Read-only, memory-mapped access to per-video feature files.

    `store[image_id]` returns `{stream: np.ndarray}` with one array per stream, loaded with
    `np.load(path, mmap_mode="r")` (no copy; the processor converts them) from
    `<feature_root>/<stream>/<image_id>.npy`, or from `<feature_root>/<stream>_testset/<image_id>.npy` when
    `split="test"`.

    Args:
        feature_root (`str`):
            The folder holding one sub-folder per stream.
        streams (`list[str]` or `str`, *optional*, defaults to `["i3d_rgb", "i3d_flow", "vggish"]`):
            The feature streams to read, as a list or a comma-separated string (`"i3d_rgb,vggish"`).
        split (`str`, *optional*, defaults to `"train"`):
            The dataset split. `"test"` reads from the `<stream>_testset/` folders; every other split reads from
            `<stream>/`.
        skip_missing_features (`bool`, *optional*, defaults to `False`):
            When `True`, [`~VideoFeatureStore.get`] returns `None` for a video whose features are missing or
            unreadable, records it in `store.missing` and logs a warning the first time. When `False` (default),
            `get` raises like `store[image_id]`. Features are never silently replaced by zeros.
        test_dir_suffix (`str`, *optional*, defaults to `"_testset"`):
            Suffix of the stream folders of the test split.

    Example:

    ```python
    >>> store = VideoFeatureStore("data/features", streams="i3d_rgb,vggish", split="test")
    >>> store.validate(test_dataset["image_id"])  # header-only check of every file, before training
    {'i3d_rgb': 2048, 'vggish': 128}
    >>> features = store["VC5RZ"]
    >>> features["i3d_rgb"].shape
    (62, 2048)
    ```
    """

    def __init__(
        self,
        feature_root: Union[str, os.PathLike],
        streams: Union[str, Iterable[str]] = DEFAULT_FEATURE_STREAMS,
        split: str = "train",
        skip_missing_features: bool = False,
        test_dir_suffix: str = TEST_DIR_SUFFIX,
    ):
        self.feature_root = os.fspath(feature_root)
        self.streams = parse_feature_streams(streams)
        self.split = str(split)
        self.skip_missing_features = bool(skip_missing_features)
        self.test_dir_suffix = test_dir_suffix
        # image_id -> how many times `get` returned None for it (a warning is logged the first time only).
        self.missing: collections.Counter = collections.Counter()
        if not os.path.isdir(self.feature_root):
            raise FileNotFoundError(f"The feature root {self.feature_root!r} is not a directory.")

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(feature_root={self.feature_root!r}, streams={list(self.streams)!r}, "
            f"split={self.split!r}, skip_missing_features={self.skip_missing_features})"
        )

    # ------------------------------------------------------------------ paths

    def stream_dir(self, stream: str) -> str:
        """The folder holding the files of `stream` for this store's split."""
        name = stream + self.test_dir_suffix if self.split == "test" else stream
        return os.path.join(self.feature_root, name)

    def feature_path(self, image_id: str, stream: str) -> str:
        """The path of the `.npy` file of `image_id` for `stream`."""
        if not isinstance(image_id, str) or not image_id:
            raise ValueError(f"A video id must be a non-empty string, got {image_id!r}.")
        if os.sep in image_id or (os.altsep and os.altsep in image_id) or image_id in (".", ".."):
            raise ValueError(f"A video id must not contain a path separator, got {image_id!r}.")
        return os.path.join(self.stream_dir(stream), image_id + ".npy")

    # ---------------------------------------------------------------- reading

    def _load(self, image_id: str, stream: str) -> np.ndarray:
        path = self.feature_path(image_id, stream)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise MissingVideoFeatureError(image_id, stream, path) from None
        except (OSError, ValueError, EOFError) as error:
            raise UnreadableVideoFeatureError(image_id, stream, path, str(error) or type(error).__name__) from None
        if not isinstance(array, np.ndarray):  # e.g. an .npz archive saved under a .npy name
            raise UnreadableVideoFeatureError(image_id, stream, path, f"not a .npy array (got {type(array).__name__})")
        problem = _shape_problem(tuple(array.shape)) or _dtype_problem(array.dtype)
        if problem is not None:
            raise UnreadableVideoFeatureError(image_id, stream, path, problem)
        return array

    def __getitem__(self, image_id: str) -> dict[str, np.ndarray]:
        """Return `{stream: array}` for `image_id`, memory-mapped.

        Raises:
            MissingVideoFeatureError (a `FileNotFoundError`): a stream's file does not exist.
            UnreadableVideoFeatureError (a `ValueError`): a stream's file is not a usable feature array.
        """
        return {stream: self._load(image_id, stream) for stream in self.streams}

    def get(self, image_id: str) -> Optional[dict[str, np.ndarray]]:
        """Like `store[image_id]`, but with `skip_missing_features=True` a missing or unreadable video gives `None`.

        Each such video is counted in `self.missing` (`image_id -> number of requests`) and logged once.
        With `skip_missing_features=False` the error is raised.
        """
        try:
            return self[image_id]
        except VideoFeatureError as error:
            if not self.skip_missing_features:
                raise
            if image_id not in self.missing:
                logger.warning(f"Skipping video '{image_id}' (skip_missing_features=True): {error}")
            self.missing[image_id] += 1
            return None

    @property
    def num_missing(self) -> int:
        """Number of distinct videos for which [`~VideoFeatureStore.get`] returned `None`."""
        return len(self.missing)

    def __contains__(self, image_id: object) -> bool:
        """Whether a file exists for `image_id` in every stream (the files are not opened)."""
        if not isinstance(image_id, str):
            return False
        try:
            return all(os.path.isfile(self.feature_path(image_id, stream)) for stream in self.streams)
        except ValueError:
            return False

    def _ids_in_dir(self, directory: str) -> set[str]:
        try:
            with os.scandir(directory) as entries:
                return {entry.name[:-4] for entry in entries if entry.name.endswith(".npy")}
        except FileNotFoundError:
            return set()

    def image_ids(self) -> list[str]:
        """The sorted ids of the videos that have a file in every stream of this split."""
        ids = None
        for stream in self.streams:
            stream_ids = self._ids_in_dir(self.stream_dir(stream))
            ids = stream_ids if ids is None else ids & stream_ids
        return sorted(ids)

    def __len__(self) -> int:
        """Number of videos that have a file in every stream of this split (lists the folders)."""
        return len(self.image_ids())

    def feature_dims(self, image_id: Optional[str] = None) -> dict[str, int]:
        """The feature dimension (last axis) of each stream, read from one file header per stream.

        Args:
            image_id (`str`, *optional*):
                The video whose files are read; by default the first file (by name) of each stream folder.
        """
        return {stream: shape[-1] for stream, shape in self.feature_shapes(image_id).items()}

    def feature_shapes(self, image_id: Optional[str] = None) -> dict[str, tuple[int, ...]]:
        """The array shape (`(frames, dim)` or `(frames, regions, dim)`) of each stream, read from one file header per
        stream (`image_id`'s, or the first file by name of each stream folder)."""
        shapes = {}
        for stream in self.streams:
            if image_id is not None:
                path = self.feature_path(image_id, stream)
            else:
                directory = self.stream_dir(stream)
                names = sorted(self._ids_in_dir(directory))
                if not names:
                    raise FileNotFoundError(f"No .npy feature files for stream '{stream}' in {directory}.")
                path = os.path.join(directory, names[0] + ".npy")
            video = image_id if image_id is not None else os.path.basename(path)[:-4]
            try:
                shape, _ = read_npy_header(path)
            except FileNotFoundError:
                raise MissingVideoFeatureError(video, stream, path) from None
            except (OSError, ValueError) as error:
                raise UnreadableVideoFeatureError(video, stream, path, str(error)) from None
            problem = _shape_problem(shape)
            if problem is not None:
                raise UnreadableVideoFeatureError(video, stream, path, problem)
            shapes[stream] = tuple(shape)
        return shapes

    # ------------------------------------------------------------- validation

    def check(
        self,
        image_ids: Iterable[str],
        expected_dims: Optional[dict[str, int]] = None,
        show_progress: Optional[bool] = None,
        check_values: bool = True,
    ) -> list[FeatureProblem]:
        """Check that every video has a usable file in every stream.

        A file is usable when it exists, is a complete `.npy` array of floating-point numbers, is 2-D
        (`[frames, dim]`) or 3-D (`[frames, regions, dim]`) and non-empty, holds no NaN or infinite value, and its
        last dimension matches the stream's: `expected_dims[stream]` when given, otherwise the most common last
        dimension among the checked videos. Everything but the values comes from the `.npy` header; the values are
        read once (memory-mapped) unless `check_values=False`.

        Args:
            image_ids (iterable of `str`): the videos to check (duplicates are checked once).
            expected_dims (`dict[str, int]`, *optional*): the required feature dimension per stream.
            show_progress (`bool`, *optional*): show a progress bar; by default only for more than 1,000 videos.
            check_values (`bool`, defaults to `True`): also read the values and report NaN / infinite ones.

        Returns:
            `list[FeatureProblem]`: every problem found, in video order then stream order (empty when all is well).
        """
        unique_ids = list(dict.fromkeys(image_ids))
        expected_dims = dict(expected_dims or {})
        unknown = sorted(set(expected_dims) - set(self.streams))
        if unknown:
            raise ValueError(
                f"expected_dims names streams {unknown} that are not in this store's {list(self.streams)}."
            )
        if show_progress is None:
            show_progress = len(unique_ids) > 1000

        problems: list[FeatureProblem] = []
        # stream -> list of (image_id, path, last dim) of the readable files, for the dimension check
        dims_seen: dict[str, list[tuple[str, str, int]]] = {stream: [] for stream in self.streams}
        iterator = unique_ids
        if show_progress:
            from tqdm.auto import tqdm

            iterator = tqdm(unique_ids, desc=f"Checking {self.split} video features", unit=" videos", leave=False)
        for image_id in iterator:
            for stream in self.streams:
                try:
                    path = self.feature_path(image_id, stream)
                except ValueError as error:
                    problems.append(FeatureProblem(image_id, stream, "", INVALID_ID, str(error)))
                    continue
                try:
                    shape, dtype = read_npy_header(path)
                except FileNotFoundError:
                    problems.append(FeatureProblem(image_id, stream, path, MISSING, "file not found"))
                    continue
                except (OSError, ValueError) as error:
                    problems.append(FeatureProblem(image_id, stream, path, UNREADABLE, str(error)))
                    continue
                shape_problem = _shape_problem(shape)
                if shape_problem is not None:
                    problems.append(FeatureProblem(image_id, stream, path, BAD_SHAPE, shape_problem))
                    continue
                values_problem = _dtype_problem(dtype)
                if values_problem is None and check_values:
                    try:
                        values_problem = _values_problem(np.load(path, mmap_mode="r", allow_pickle=False))
                    except (OSError, ValueError) as error:
                        problems.append(FeatureProblem(image_id, stream, path, UNREADABLE, str(error)))
                        continue
                if values_problem is not None:
                    problems.append(FeatureProblem(image_id, stream, path, BAD_VALUES, values_problem))
                    continue
                dims_seen[stream].append((image_id, path, shape[-1]))

        for stream, seen in dims_seen.items():
            if not seen:
                continue
            if stream in expected_dims:
                expected, source = expected_dims[stream], "expected_dims"
            else:
                expected = collections.Counter(dim for _, _, dim in seen).most_common(1)[0][0]
                source = "the most common dimension"
            for image_id, path, dim in seen:
                if dim != expected:
                    problems.append(
                        FeatureProblem(
                            image_id, stream, path, DIM_MISMATCH, f"feature dim {dim}, expected {expected} ({source})"
                        )
                    )
        order = {image_id: index for index, image_id in enumerate(unique_ids)}
        stream_order = {stream: index for index, stream in enumerate(self.streams)}
        problems.sort(key=lambda problem: (order[problem.image_id], stream_order[problem.stream]))
        return problems

    def validate(
        self,
        image_ids: Iterable[str],
        expected_dims: Optional[dict[str, int]] = None,
        max_listed: int = 20,
        show_progress: Optional[bool] = None,
        check_values: bool = True,
    ) -> dict[str, int]:
        """Check every video up front (see [`~VideoFeatureStore.check`]) and raise one error listing ALL problems.

        With `check_values=False` it reads only the `.npy` headers (the ~11k AVSD videos in about a second);
        by default it also reads every value once to find NaN / infinite ones.

        Returns:
            `dict[str, int]`: the feature dimension of each stream.

        Raises:
            VideoFeatureValidationError (a `ValueError`): with the first `max_listed` problems in its message, the
            total count, and all of them in its `problems` attribute.
        """
        unique_ids = list(dict.fromkeys(image_ids))
        problems = self.check(unique_ids, expected_dims=expected_dims, show_progress=show_progress, check_values=check_values)
        if problems:
            raise VideoFeatureValidationError(problems, len(unique_ids), self.feature_root, max_listed=max_listed)
        if not unique_ids:
            return dict(expected_dims or {})
        return self.feature_dims(unique_ids[0])
