// A minimal test harness for the native tests (no third-party framework, so the
// build downloads nothing). Each TEST registers itself; main() runs those whose
// name starts with the first command-line argument, so ctest can run groups apart.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace pa_test {

struct TestCase {
  std::string name;
  std::function<void()> body;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

inline int& failures() {
  static int count = 0;
  return count;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> body) {
    registry().push_back({name, std::move(body)});
  }
};

}  // namespace pa_test

#define PA_TEST_CONCAT2(a, b) a##b
#define PA_TEST_CONCAT(a, b) PA_TEST_CONCAT2(a, b)
#define TEST(name)                                               \
  static void PA_TEST_CONCAT(test_fn_, __LINE__)();              \
  static pa_test::Registrar PA_TEST_CONCAT(test_reg_, __LINE__)( \
      name, PA_TEST_CONCAT(test_fn_, __LINE__));                 \
  static void PA_TEST_CONCAT(test_fn_, __LINE__)()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++pa_test::failures();                                                          \
    }                                                                                 \
  } while (0)

// |actual - expected| <= tol, printing both values when it fails.
#define CHECK_NEAR(actual, expected, tol)                                                        \
  do {                                                                                           \
    const double pa_a = (actual), pa_e = (expected), pa_t = (tol);                               \
    if (!(std::fabs(pa_a - pa_e) <= pa_t)) {                                                     \
      std::fprintf(stderr, "  %s:%d: %s = %.9g, expected %.9g (tol %.3g)\n", __FILE__, __LINE__, \
                   #actual, pa_a, pa_e, pa_t);                                                   \
      ++pa_test::failures();                                                                     \
    }                                                                                            \
  } while (0)
