#!/usr/bin/env bash
# Gradescope image build for the @@hw_id@@ autograder (runs once, as root, in /autograder/source).
# Installs Python and a @@torch_build@@ torch, the project's dependencies (never the reference code itself:
# the sandboxed student user must not find it in site-packages), creates that user and locks the
# reference and the results away from it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3 python3-venv python3-pip
python3 -m venv /autograder/venv
py=/autograder/venv/bin/python
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q @@torch_index@@"torch==@@torch_version@@" "torchvision==@@torchvision_version@@"
"$py" -m pip install -q -r /autograder/source/requirements.txt
id -u student >/dev/null 2>&1 || adduser --disabled-password --gecos "" student
mkdir -p /autograder/results
chmod 700 /autograder/source /autograder/results
