"""genlib phones nobody home: telemetry off by default, a user's own setting wins. (The server
`genlib ui` starts is checked in the browser test, tests/e2e/test_browser.py.)"""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

def test_telemetry_is_off_by_default_and_a_users_setting_wins():
    code = "import genlib, os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], os.environ['RAY_USAGE_STATS_ENABLED'])"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}
    default = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["true", "0"]
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "MLFLOW_DISABLE_TELEMETRY": "false"},
                          capture_output=True, text=True, check=True)
    assert mine.stdout.split() == ["false", "0"]
