#!/bin/sh
echo "source of the example app"
