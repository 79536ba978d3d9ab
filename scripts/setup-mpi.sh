#!/usr/bin/env bash
# Installs Open MPI and the headers the `mpi` feature builds against (libopenmpi-dev,
# openmpi-bin, libclang-dev for the bindings) from Debian, when they are missing.
set -euo pipefail
if command -v mpirun >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h -o -e /usr/include/mpi.h ] \
  && ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenmpi-dev openmpi-bin libclang-dev >/dev/null
