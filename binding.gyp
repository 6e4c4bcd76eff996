# node-gyp build of the addon. The C++ source lists live in native/sources.json,
# which CMakeLists.txt reads too. ISA-specific kernels are static libraries with
# their own flags; the rest of the addon is built for the baseline ISA only.
{
  'variables': {
    'pa_common_cflags': ['-O3', '-fPIC', '-ffp-contract=off', '-fno-math-errno', '-Wall', '-Wextra', '-Wno-unused-parameter'],
  },
  'target_defaults': {
    'cflags!': ['-O2', '-O0'],
    'cflags_cc!': ['-fno-exceptions', '-fno-rtti'],
    'cflags_cc': ['-fexceptions', '-std=c++17'],
    'include_dirs': ['native'],
    'conditions': [
      ['target_arch=="x64"', {'defines': ['PA_HAVE_AVX2', 'PA_HAVE_AVX512']}],
    ],
  },
  'targets': [
    {
      'target_name': 'performer_attention',
      'sources': [
        '<!@(node scripts/sources.js core)',
        '<!@(node scripts/sources.js addon)',
      ],
      'include_dirs': ["<!(node -p \"require('node-addon-api').include_dir\")"],
      'defines': ['NAPI_VERSION=8', 'NAPI_CPP_EXCEPTIONS', 'NODE_ADDON_API_DISABLE_DEPRECATED'],
      'cflags': ['<@(pa_common_cflags)'],
      'conditions': [
        ['target_arch=="x64"', {'dependencies': ['pa_kernels_avx2', 'pa_kernels_avx512']}],
      ],
    },
  ],
  'conditions': [
    ['target_arch=="x64"', {
      'targets': [
        {
          'target_name': 'pa_kernels_avx2',
          'type': 'static_library',
          'sources': ['<!@(node scripts/sources.js kernels_avx2)'],
          'cflags': ['<@(pa_common_cflags)', '-mavx2', '-mfma'],
        },
        {
          'target_name': 'pa_kernels_avx512',
          'type': 'static_library',
          'sources': ['<!@(node scripts/sources.js kernels_avx512)'],
          'cflags': ['<@(pa_common_cflags)', '-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx2', '-mfma'],
        },
      ],
    }],
  ],
}
