// natlab's pion agent. Built offline in GOPATH mode from Debian's golang-github-pion-*-dev
// (lab/agents/pion/build.py); this file only makes the /v2 import paths resolve.
module natlab/pionagent

go 1.19
