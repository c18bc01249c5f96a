"""`node: kubernetes`: what a Kubernetes node carries on the path, put on each host around any
mode (kube-proxy's rules for N Services, hence conntrack on every flow; flannel's masquerade
rules for the flannel modes), as journalled steps with their undos. See steps.py."""
