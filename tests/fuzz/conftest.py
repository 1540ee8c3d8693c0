from tests.acquisition.conftest import sacs  # noqa: F401 -- fixtures
from tests.store.conftest import backend, postgres  # noqa: F401
