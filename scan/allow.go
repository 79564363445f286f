package scan

import "strings"

// The allowlist: every global a tensor checkpoint needs, derived from
// checkpoints written by torch.save (state dicts, optimizer states, whole
// training checkpoints), PyTorch's own weights_only unpickler, and NumPy's
// array pickles (protocols 2 to 5). Anything else a pickle imports is
// dangerous: a pickle can call whatever it imports.
var allowed = func() map[string]bool {
	m := map[string]bool{}
	add := func(names ...string) {
		for _, n := range names {
			m[n] = true
		}
	}
	add(
		"collections.OrderedDict",
		"torch.Size", "torch.Tensor", "torch.device", "torch.nn.parameter.Parameter",
		"torch.serialization._get_layout",
		"torch.storage.TypedStorage", "torch.storage.UntypedStorage", "torch.UntypedStorage", "torch.TypedStorage",
		"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
		"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
		"torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_sparse_csr_tensor",
		"torch._utils._rebuild_meta_tensor_no_storage", "torch._utils._rebuild_qtensor",
		"torch._utils._rebuild_device_tensor_from_numpy", "torch._utils._rebuild_wrapper_subclass",
		"torch._utils._rebuild_nested_tensor", "torch._tensor._rebuild_from_type_v2",
		// NumPy arrays and scalars (numpy 1 and 2 module names).
		"numpy.ndarray", "numpy.dtype",
		"numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar", "numpy.core.numeric._frombuffer",
		"numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy._core.numeric._frombuffer",
		// Plain containers NumPy and optimizers pickle; _codecs.encode turns
		// protocol-2 latin-1 strings back into bytes.
		"builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex", "builtins.slice",
		"_codecs.encode",
	)
	elems := []string{"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
		"ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4"}
	for _, e := range elems {
		for _, p := range []string{"torch.", "torch.cuda."} {
			add(p+e+"Storage", p+e+"Tensor")
		}
		add("torch.sparse."+e+"Tensor", "torch.cuda.sparse."+e+"Tensor")
	}
	for _, t := range []string{"float16", "float32", "float64", "bfloat16", "half", "float", "double",
		"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool", "long", "int", "short",
		"complex32", "complex64", "complex128", "cfloat", "cdouble", "chalf",
		"quint8", "qint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn", "float8_e5m2",
		"float8_e4m3fnuz", "float8_e5m2fnuz",
		"strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn",
		"contiguous_format", "channels_last", "channels_last_3d", "preserve_format",
		"per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
		"per_channel_affine_float_qparams"} {
		add("torch." + t)
	}
	return m
}()

// allowedModules are the modules of the allowlisted names; importing one
// of them (without using anything else) runs no user code.
var allowedModules = func() map[string]bool {
	m := map[string]bool{"numpy.dtypes": true}
	for k := range allowed {
		if i := strings.LastIndexByte(k, '.'); i > 0 {
			m[k[:i]] = true
		}
	}
	return m
}()

// canonicalModule applies the Python 2 names that the unpickler maps for
// protocols below 3 (fix_imports) for the modules on the allowlist.
func canonicalModule(mod string) string {
	switch mod {
	case "__builtin__":
		return "builtins"
	case "copy_reg":
		return "copyreg"
	}
	return mod
}

// isAllowed reports whether importing module.name is safe. The pair is
// compared exactly, so a dotted name that walks to attributes
// ("OrderedDict.__init__.__globals__") is not allowed.
func isAllowed(module, name string) bool {
	module = canonicalModule(module)
	if module == "numpy.dtypes" && strings.HasSuffix(name, "DType") && isIdent(name) {
		return true
	}
	return allowed[module+"."+name] && isIdent(name) && isDotted(module)
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func isDotted(s string) bool {
	for _, p := range strings.Split(s, ".") {
		if !isIdent(p) {
			return false
		}
	}
	return true
}

// unsupportedModule names importers of formats we refuse to judge: joblib
// stores arrays as raw bytes between pickle opcodes.
func unsupportedModule(module string) string {
	if module == "joblib" || strings.HasPrefix(module, "joblib.") || strings.HasPrefix(module, "sklearn.externals.joblib") {
		return "joblib pickle (arrays interleaved with pickle opcodes)"
	}
	return ""
}
