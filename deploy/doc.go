// Package deploy holds stackline's deployment artefacts: Kubernetes
// manifests (deploy/kubernetes) and the container image check
// (check-image.sh). It has no code; its tests check the manifests against
// the agent they deploy: its flags, the capabilities the tracer checks for,
// the address and path of its health endpoint, and its benchmark budgets.
package deploy
