-- a random X-User-ID per request, so bucketing does real work
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/auth/me", {["X-User-ID"] = "user-" .. math.random(1, 1000000)})
end
