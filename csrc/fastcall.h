// The op entries of ebjdat._C as CPython METH_FASTCALL functions.
//
// Why: pybind11's generic dispatch costs about 0.3 us per call with 14 scalar arguments
// (one type caster per argument, overload resolution, keyword matching), where reading
// them straight from the vectorcall array costs about 0.1 us (measured on the CPU,
// 2026-11-30). Every op call pays it once, on the GPU as on the host path, and on
// CIFAR-size tensors a launch is a few microseconds in all.
//
// entry<&f> wraps `void f(A...)` whose arguments are all uintptr_t (data pointers),
// int64_t, int, double or bool: positional only, converted as pybind11 would (ints for
// integers, ints or floats for doubles, truth for bools); a wrong count or type raises
// TypeError naming the function and the argument's position, and the exceptions f
// throws reach Python as pybind11 would raise them (py::value_error -> ValueError,
// std::exception -> RuntimeError).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ebjdat {
namespace fastcall {
namespace py = pybind11;

// Raised (as a C++ exception) when an argument does not convert; the Python error is set.
struct ArgError {};

template <class T>
T convert(PyObject* o, const char* fn, int pos) {
  auto fail = [&](const char* want) {
    PyErr_Format(PyExc_TypeError, "ebjdat._C.%s: argument %d must be %s, got %s", fn, pos, want,
                 Py_TYPE(o)->tp_name);
    throw ArgError{};
  };
  if constexpr (std::is_same_v<T, bool>) {
    const int v = PyObject_IsTrue(o);
    if (v < 0) throw ArgError{};
    return v != 0;
  } else if constexpr (std::is_same_v<T, double>) {
    if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
    if (!PyFloat_Check(o) && !PyLong_Check(o)) fail("a float");
    const double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) throw ArgError{};
    return v;
  } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {  // data pointers
    if (!PyLong_Check(o)) fail("an int");
    const unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) throw ArgError{};
    return static_cast<T>(v);
  } else {
    static_assert(std::is_integral_v<T> && std::is_signed_v<T>, "unsupported argument type");
    if (!PyLong_Check(o)) fail("an int");
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) throw ArgError{};
    if (overflow || v < (long long)std::numeric_limits<T>::min() ||
        v > (long long)std::numeric_limits<T>::max()) {
      PyErr_Format(PyExc_OverflowError, "ebjdat._C.%s: argument %d is out of range", fn, pos);
      throw ArgError{};
    }
    return static_cast<T>(v);
  }
}

template <class Sig>
struct Entry;

template <class... A>
struct Entry<void (*)(A...)> {
  template <void (*F)(A...), size_t... I>
  static void invoke(const char* fn, PyObject* const* args, std::index_sequence<I...>) {
    F(convert<A>(args[I], fn, int(I) + 1)...);
  }

  template <void (*F)(A...), const char* Name>
  static PyObject* call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != Py_ssize_t(sizeof...(A))) {
      PyErr_Format(PyExc_TypeError, "ebjdat._C.%s takes %d positional arguments, got %zd", Name,
                   int(sizeof...(A)), nargs);
      return nullptr;
    }
    try {
      invoke<F>(Name, args, std::index_sequence_for<A...>{});
    } catch (const ArgError&) {
      return nullptr;
    } catch (py::error_already_set& e) {
      e.restore();
      return nullptr;
    } catch (const py::builtin_exception& e) {
      e.set_error();
      return nullptr;
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      return nullptr;
    }
    Py_RETURN_NONE;
  }
};

}  // namespace fastcall

// A PyMethodDef for f under `name` (a static char array: it names the errors too).
#define EBJDAT_FASTCALL(f, name, doc)                                                     \
  PyMethodDef {                                                                           \
    name,                                                                                 \
        reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(                   \
            &::ebjdat::fastcall::Entry<decltype(&f)>::template call<&f, name>)),          \
        METH_FASTCALL, doc                                                                \
  }

// Adds the entries of `defs` (ending in a zeroed PyMethodDef, static storage) to m.
inline void add_fastcall(py::module_& m, PyMethodDef* defs) {
  if (PyModule_AddFunctions(m.ptr(), defs) != 0) throw py::error_already_set();
}

// The op families' registrars: each csrc/<family>.cpp registers a function that adds its
// entries to the module (EBJDAT_REGISTER, run at static initialisation, before the module's
// init function), and module.cpp calls them all, so a new op touches no shared file. A
// function-local static: the list exists before any translation unit's registrar runs.
using Registrar = void (*)(py::module_&);

inline std::vector<Registrar>& registrars() {
  static std::vector<Registrar> list;
  return list;
}

struct Register {
  explicit Register(Registrar r) { registrars().push_back(r); }
};

#define EBJDAT_REGISTER(fn) static const ::ebjdat::Register ebjdat_register_##fn{&fn}

}  // namespace ebjdat
