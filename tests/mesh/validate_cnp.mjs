// Validate CiliumNetworkPolicy objects (a JSON list on stdin) against @kubernetes-models/cilium's schema.
// Run by test_cnp_schema.py from ~/.cache/isthmus/node, where the package is installed.
import { CiliumNetworkPolicy } from "@kubernetes-models/cilium/cilium.io/v2/CiliumNetworkPolicy";
import { readFileSync } from "node:fs";
const docs = JSON.parse(readFileSync(0, "utf8"));
const errors = [];
for (const d of docs) { try { new CiliumNetworkPolicy(d).validate(); } catch (e) { errors.push(`${d.metadata.name}: ${e.message}`); } }
console.log(JSON.stringify({ checked: docs.length, errors }));
