"""Repository-wide pytest set-up: nothing is ever fetched from a model hub in tests."""

import os

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)


def pytest_configure(config):
    """Run notebook cells under nbval as Jupyter does, with ``store_history=True``.

    nbval executes cells with ``store_history=False``; IPython then cannot see the cell in its
    history and ignores a trailing ``;``, so ``check_number(...);`` would show ``False`` under
    nbval but not in Jupyter, nbconvert (which stored the outputs) or the book.
    """
    try:
        from nbval.kernel import RunningKernel
    except ImportError:
        return
    if getattr(RunningKernel.execute_cell_input, "_rlhf_lab_patched", False):
        return

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin,
                               stop_on_error=False)

    execute_cell_input._rlhf_lab_patched = True
    RunningKernel.execute_cell_input = execute_cell_input
