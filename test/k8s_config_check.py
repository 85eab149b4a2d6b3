#!/usr/bin/python3
"""The config shipped in k8s/base/configmap.yaml must pass `egressd check`."""
import subprocess
import sys
import tempfile

import yaml

egressd, configmap = sys.argv[1], sys.argv[2]
with open(configmap, encoding="utf-8") as f:
    doc = yaml.safe_load(f)
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
    out.write(doc["data"]["egressd.yaml"])
result = subprocess.run([egressd, "check", "--config", out.name], check=False)
sys.exit(result.returncode)
