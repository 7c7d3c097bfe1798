-- Always finishes at once with the input.
return { rules = { { reply = function(conv)
  return { tool = "finish", args = { answer = conv.user } }
end } } }
