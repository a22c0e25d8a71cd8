"""The one allowlist of types a model artifact may contain, and the only way artifacts are loaded.

A skops file is a tree of nodes, each naming a type or function that loading would import and
build. An artifact loads only when EVERY name in its tree is on :data:`ALLOWED` (or on the
caller's ``extra`` list, e.g. a service's own): anything else, ``builtins.eval`` or a
``fleet.*`` function included, raises :class:`~fleet.errors.IntegrityError` naming the types,
before anything in the file is built. skops's own audit then runs on top, trusting only the
names this check passed.

The list is the documentation. Names are written as you would import them; each is also
resolved to the dotted name skops records (``sklearn.pipeline.Pipeline`` and
``sklearn.ensemble.HistGradientBoostingClassifier`` become the private module paths the classes
live in), so a scikit-learn release that moves a class keeps loading. To trust more types, pass
``extra`` (a service-level list, see README "Security model") or add them here with a test that
dumps a model using them.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import import_module
from typing import Any

import skops.io as sio

from fleet.errors import IntegrityError

# --- the allowlist ------------------------------------------------------------------------------
_CONTAINERS = (
    # Plain data skops writes for estimator parameters and fitted attributes.
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
    "builtins.str", "builtins.int", "builtins.float", "builtins.bool", "builtins.bytes",
    "builtins.slice", "builtins.NoneType", "collections.OrderedDict",
)
_ARRAYS = (
    # numpy/scipy types skops needs for fitted arrays, dtypes and random states.
    "numpy.ndarray", "numpy.dtype", "numpy.float64", "numpy.float32", "numpy.float16",
    "numpy.int64", "numpy.int32", "numpy.int16", "numpy.int8", "numpy.uint64", "numpy.uint32",
    "numpy.uint16", "numpy.uint8", "numpy.bool_", "numpy.str_", "numpy.intp",
    "numpy.random.Generator", "numpy.random.RandomState", "numpy.random.PCG64",
    "numpy.random.MT19937",
    "scipy.sparse.csr_matrix", "scipy.sparse.csc_matrix", "scipy.sparse.csr_array",
    "scipy.sparse.csc_array",
)
_FUNCTIONS = (
    # Functions an estimator may hold as a parameter (FunctionTransformer, target transforms,
    # feature scores). Pure numeric functions only: nothing that reads, writes or evaluates.
    "numpy.log1p", "numpy.expm1", "numpy.log", "numpy.exp", "numpy.sqrt", "numpy.square",
    "sklearn.feature_selection.f_classif", "sklearn.feature_selection.f_regression",
    "sklearn.feature_selection.chi2", "sklearn.feature_selection.mutual_info_classif",
    "sklearn.feature_selection.mutual_info_regression",
)
_COMPOSITION = (
    "sklearn.pipeline.Pipeline", "sklearn.pipeline.FeatureUnion",
    "sklearn.compose.ColumnTransformer", "sklearn.compose.TransformedTargetRegressor",
)
_TRANSFORMS = (
    "sklearn.impute.SimpleImputer", "sklearn.impute.KNNImputer", "sklearn.impute.MissingIndicator",
    "sklearn.preprocessing.StandardScaler", "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.MaxAbsScaler", "sklearn.preprocessing.RobustScaler",
    "sklearn.preprocessing.Normalizer", "sklearn.preprocessing.Binarizer",
    "sklearn.preprocessing.OneHotEncoder", "sklearn.preprocessing.OrdinalEncoder",
    "sklearn.preprocessing.TargetEncoder", "sklearn.preprocessing.LabelEncoder",
    "sklearn.preprocessing.LabelBinarizer", "sklearn.preprocessing.PolynomialFeatures",
    "sklearn.preprocessing.KBinsDiscretizer", "sklearn.preprocessing.PowerTransformer",
    "sklearn.preprocessing.QuantileTransformer", "sklearn.preprocessing.FunctionTransformer",
    "sklearn.feature_selection.SelectKBest", "sklearn.feature_selection.SelectPercentile",
    "sklearn.feature_selection.VarianceThreshold",
    "sklearn.decomposition.PCA", "sklearn.decomposition.TruncatedSVD",
)
_ESTIMATORS = (
    # flywheel's own families (fleet/trainer/pipeline.py MODELS) ...
    "sklearn.ensemble.HistGradientBoostingClassifier",
    "sklearn.ensemble.HistGradientBoostingRegressor",
    "sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Ridge",
    "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    # ... and the common ones of user pipelines.
    "sklearn.linear_model.LinearRegression", "sklearn.linear_model.RidgeClassifier",
    "sklearn.linear_model.Lasso", "sklearn.linear_model.ElasticNet",
    "sklearn.linear_model.SGDClassifier", "sklearn.linear_model.SGDRegressor",
    "sklearn.linear_model.HuberRegressor",
    "sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor",
    "sklearn.ensemble.ExtraTreesClassifier", "sklearn.ensemble.ExtraTreesRegressor",
    "sklearn.ensemble.GradientBoostingClassifier", "sklearn.ensemble.GradientBoostingRegressor",
    "sklearn.tree.DecisionTreeClassifier", "sklearn.tree.DecisionTreeRegressor",
    "sklearn.tree.ExtraTreeClassifier", "sklearn.tree.ExtraTreeRegressor",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.neighbors.KNeighborsClassifier", "sklearn.neighbors.KNeighborsRegressor",
)
_INTERNALS = (
    # Fitted state of the estimators above. skops leaves TreePredictor off its defaults because
    # scikit-learn does not bounds-check its node array: a crafted one can crash the process.
    # Here only files under the artifact root whose sha256 the registry recorded are loaded.
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors.KDTree", "sklearn.neighbors.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.linear_model._sgd_fast.Hinge", "sklearn.linear_model._sgd_fast.Log",
    "sklearn.linear_model._sgd_fast.SquaredLoss", "sklearn.linear_model._sgd_fast.Huber",
    "sklearn.linear_model._sgd_fast.ModifiedHuber",
    "sklearn.linear_model._sgd_fast.EpsilonInsensitive",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.HalfLogitLink", "sklearn._loss.link.LogLink",
    "sklearn._loss.link.MultinomialLogit", "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.PinballLoss", "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.HalfPoissonLoss", "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyPinballLoss", "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss", "sklearn._loss._loss.CyExponentialLoss",
)

ALLOWED: tuple[str, ...] = (
    _CONTAINERS + _ARRAYS + _FUNCTIONS + _COMPOSITION + _TRANSFORMS + _ESTIMATORS + _INTERNALS
)
"""Every type or function a model artifact may name, as imported (see the module docstring)."""


# --- checking and loading -----------------------------------------------------------------------
def allowed_types(extra: Iterable[str] = ()) -> frozenset[str]:
    """The dotted names an artifact may contain: :data:`ALLOWED` plus ``extra``.

    Each name counts as written and as the ``module.name`` of the object it imports to, which is
    how skops records it.

    >>> "sklearn.pipeline.Pipeline" in allowed_types()
    True
    >>> "builtins.eval" in allowed_types(), "my.Scaler" in allowed_types(["my.Scaler"])
    (False, True)
    """
    return _resolved(ALLOWED) | _resolved(tuple(extra))


@lru_cache(maxsize=32)
def _resolved(names: tuple[str, ...]) -> frozenset[str]:
    out: set[str] = set()
    for name in names:
        out.add(name)
        real = _real_name(name)
        if real:
            out.add(real)
    return frozenset(out)


def _real_name(name: str) -> str | None:
    """``module.name`` of what ``name`` imports to (None if it does not import here)."""
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        return None  # e.g. a class this scikit-learn version does not have
    real_module, real_name = getattr(obj, "__module__", None), getattr(obj, "__name__", None)
    return f"{real_module}.{real_name}" if real_module and real_name else None


def named_types(data: bytes) -> set[str]:
    """Every dotted type or function name in a skops file's tree (read from its schema only).

    Raises:
        IntegrityError: the bytes are not a skops file.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            schema = json.loads(zf.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise IntegrityError(f"not a skops file ({type(exc).__name__}: {exc})") from exc
    return {f"{m}.{c}" for m, c in _names(schema)}


def _names(node: Any) -> Iterator[tuple[str, str]]:
    stack = [node]
    while stack:  # iterative: a deeply nested crafted file must not hit the recursion limit
        cur = stack.pop()
        if isinstance(cur, dict):
            module, cls = cur.get("__module__"), cur.get("__class__")
            if module is not None or cls is not None:
                yield str(module), str(cls)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def check_types(data: bytes, *, what: str, extra: Iterable[str] = ()) -> list[str]:
    """Refuse a skops file naming anything off the allowlist; return what skops must be told.

    Nothing in the file is imported or built here: the names come from its schema, and from
    :func:`skops.io.get_untrusted_types` (skops's own view of the same tree).

    Args:
        data: the skops file's bytes.
        what: names the artifact in the error (e.g. its URI).
        extra: more allowed names (a service's own list).

    Returns:
        The names skops does not trust by default, all of them allowlisted: pass them as
        ``trusted`` to :func:`skops.io.loads`.

    Raises:
        IntegrityError: naming every type off the allowlist, or the bytes are not a skops file.
    """
    allowed = allowed_types(extra)
    # The schema first: skops's tree walk may import a named module, and a module's import
    # can have effects of its own.
    _refuse(named_types(data) - allowed, what)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a malformed tree: skops's own error, nothing built
        raise IntegrityError(f"{what} is not a loadable skops file: {exc}") from exc
    _refuse(set(untrusted) - allowed, what)
    return list(untrusted)


def _refuse(refused: set[str], what: str) -> None:
    if refused:
        raise IntegrityError(
            f"{what} names types that are not on the artifact allowlist: {sorted(refused)}; "
            "refusing to load it. Allowed types are listed in fleet/registry/trust.py (a "
            "service may trust more with its own allowlist)"
        )


def load_trusted(data: bytes, *, what: str, extra: Iterable[str] = ()) -> Any:
    """Load a skops file whose every type is allowlisted (see :func:`check_types`).

    Raises:
        IntegrityError: a type is off the allowlist, or the file is not a skops file.
    """
    extra = tuple(extra)
    trusted = check_types(data, what=what, extra=extra)
    return sio.loads(data, trusted=trusted)
