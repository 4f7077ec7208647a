constexpr = object  # only used as a kernel argument annotation at import
