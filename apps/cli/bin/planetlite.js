#!/usr/bin/env node
// The planetlite command: the compiled CLI lives in dist/.
import('../dist/main.js');
