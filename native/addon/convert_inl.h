#pragma once

#include <new>
#include <stdexcept>
#include <utility>

#include "core/attention_common.h"

namespace pa_addon {

template <typename Fn>
PendingError capture_errors(Fn&& fn) {
  try {
    fn();
  } catch (const pa::InputError& error) {
    return {"RangeError", error.what(), error.code()};
  } catch (const pa::Cancelled&) {
    return {"Error", "The operation was aborted", "ABORT_ERR"};
  } catch (const std::bad_alloc&) {
    return {"RangeError", "not enough memory for this call", "ERR_MEMORY_ALLOCATION_FAILED"};
  } catch (const std::exception& error) {
    return {"Error", std::string("internal error: ") + error.what(), "ERR_PERFORMER_INTERNAL"};
  }
  return {};
}

template <typename Fn>
void run_or_throw(Napi::Env env, Fn&& fn) {
  const PendingError error = capture_errors(std::forward<Fn>(fn));
  if (!error.empty()) throw make_error(env, error.kind, error.message, error.code);
}

}  // namespace pa_addon
