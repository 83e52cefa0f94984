#!/usr/bin/env ruby
# celerity-check: --task plugins.rb_add --args [2,3] --slow-task plugins.rb_sleep
# frozen_string_literal: true
#
# Celerity plugin in Ruby (standard library only), both modes, through celerity_plugin.rb.
#
# plugins.rb_add(x, y)            x + y; exact for integers of any size (Ruby's Integer)
# plugins.rb_words(text, limit)   the words of text, at most limit of them (default 10)
# plugins.rb_sleep(seconds)       sleeps, then returns seconds (cancellable)
#
# The params: hashes are the argument schemas answered to `describe`: the worker and the
# clients refuse a call with a string for x before it is queued. Without params:, the
# block's own parameter names are the task's parameters, taking any value.

require_relative 'celerity_plugin'
include CelerityPlugin

task 'plugins.rb_add', params: { x: 'number', y: 'number' }, returns: 'number',
                       queue: 'plugins', doc: 'x + y; exact for integers of any size.' do |x, y|
  x + y
end

task 'plugins.rb_words', params: { text: 'string', limit: { type: 'integer', minimum: 1, default: 10 } },
                         returns: { type: 'array', items: { type: 'string' } }, queue: 'plugins',
                         doc: 'The words of text, at most limit of them.' do |text, limit = 10|
  text.split.first(limit)
end

task 'plugins.rb_sleep', queue: 'plugins', time_limit: 5, grace_period: 1,
                         doc: 'Sleeps for seconds, then returns them.' do |seconds|
  sleep(seconds)
  seconds
end

run(name: 'rb_tasks')
